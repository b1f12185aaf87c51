"""The endpoint's garbage-collector policy: what it freezes, that cycles are still
collected (those made after a freeze at once, those it pinned at the next thaw), that
memory pinned under connection churn stays bounded, and that it hands the collector back.

The collector is the process's: every test starts and ends unfrozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from streammetrics.collector_policy import CollectorConfig, CollectorPolicy
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import ConfigError
from tests.support.endpoints import serving
from tests.support.waiting import until


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class _Node:
    __slots__ = ("__weakref__", "other")

    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> _Node:
    """One of two objects that reference each other: only the cycle collector frees it."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_freeze_takes_the_long_lived_objects_out_of_full_collections() -> None:
    held = [[i] for i in range(20_000)]  # 20,000 tracked lists, alive throughout
    policy = CollectorPolicy(clock=_Clock())
    policy.after_tick()
    st = policy.statistics()
    assert (st.freezes, st.full_collections) == (1, 1)
    assert st.frozen_objects >= len(held)
    assert len(gc.get_objects()) < 5_000  # what a full pass walks now
    assert held[-1] == [19_999]


def test_a_cycle_made_after_a_freeze_is_collected() -> None:
    policy = CollectorPolicy(clock=_Clock())
    policy.after_tick()
    ref = weakref.ref(_cycle())
    assert ref() is not None  # garbage, but in a cycle: reference counting cannot free it
    gc.collect()
    assert ref() is None


def test_a_cycle_pinned_by_a_freeze_is_reclaimed_at_the_thaw() -> None:
    clock = _Clock()
    policy = CollectorPolicy(CollectorConfig(thaw_s=10.0), clock=clock)
    node = _cycle()
    ref = weakref.ref(node)
    policy.after_tick()  # frozen while alive
    del node
    gc.collect()
    assert ref() is not None  # the cost of freezing: pinned until the thaw
    clock.t += 9.0
    policy.after_tick()
    assert ref() is not None
    clock.t += 1.0
    policy.after_tick()
    assert ref() is None
    st = policy.statistics()
    assert st.full_collections == 2 and st.last_full_collection_ms is not None


def test_a_full_collection_the_collector_ran_is_frozen_after_the_next_tick() -> None:
    policy = CollectorPolicy(clock=_Clock())
    policy.after_tick()
    policy.after_tick()  # nothing happened in between: nothing to freeze
    assert policy.statistics().freezes == 1
    held = [[i] for i in range(5_000)]
    gc.collect()  # a full pass, as the collector runs when enough survived
    policy.after_tick()
    st = policy.statistics()
    assert (st.freezes, st.full_collections) == (2, 1)
    assert len(gc.get_objects()) < len(held)


def test_freeze_false_leaves_the_collector_alone() -> None:
    policy = CollectorPolicy(CollectorConfig(freeze=False), clock=_Clock())
    policy.after_tick()
    policy.close()
    assert gc.get_freeze_count() == 0
    assert policy.statistics().freezes == 0


def test_close_unfreezes() -> None:
    policy = CollectorPolicy(clock=_Clock())
    policy.after_tick()
    assert gc.get_freeze_count() > 0
    policy.close()
    assert gc.get_freeze_count() == 0


def test_the_config_is_checked_when_read() -> None:
    with pytest.raises(msgspec.ValidationError, match="thaw_s"):
        msgspec.convert({"thaw_s": 0}, CollectorConfig)
    with pytest.raises(ConfigError, match=r"config\.gc\.frezee"):
        MetricsEndpoint(name="m", port=0, gc={"frezee": True})


@pytest.mark.anyio
async def test_an_endpoint_pins_a_bounded_heap_under_connection_churn() -> None:
    """Every request on a new connection leaves cyclic garbage; what the freezes pin of
    it is reclaimed at each thaw, so the heap (frozen or not) does not grow with the
    requests served; the endpoint's stop unfreezes."""
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
    async with (
        serving(tick_s=0.05, gc={"thaw_s": 1.0}) as (ep, _client),
        httpx.AsyncClient(base_url=ep.url, timeout=5, limits=fresh) as c,
    ):
        await until(lambda: ep.collector.statistics().full_collections >= 1)
        sizes: list[int] = []
        for _ in range(4):
            for _ in range(15):
                for path in ("/health", "/metrics", "/metrics/json"):
                    assert (await c.get(path)).status_code in (200, 503)
            done = ep.collector.statistics().full_collections
            await until(lambda done=done: ep.collector.statistics().full_collections > done)
            sizes.append(gc.get_freeze_count() + len(gc.get_objects()))
        # 135 requests, each on its own connection, between the first and the last
        # reading: pinned for good, some 60 objects each would stay (~8,000); a few
        # hundred may be in flight at the last freezes.
        assert sizes[-1] - sizes[0] < 2_000, sizes
        assert ep.collector.statistics().freezes >= 4
    assert gc.get_freeze_count() == 0


def test_the_collector_stays_frozen_until_the_last_policy_that_froze_it_closes() -> None:
    """Two endpoints in one process share its collector: the first to stop must not
    unfreeze what the other froze."""
    first, second = CollectorPolicy(clock=_Clock()), CollectorPolicy(clock=_Clock())
    idle = CollectorPolicy(clock=_Clock())  # never froze: its close changes nothing
    first.after_tick()
    second.after_tick()
    idle.close()
    first.close()
    assert gc.get_freeze_count() > 0
    first.close()  # twice: still the other's freeze
    assert gc.get_freeze_count() > 0
    second.close()
    assert gc.get_freeze_count() == 0


@pytest.mark.anyio
async def test_an_endpoint_exports_its_policy_in_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    async with serving(tick_s=0.05) as (ep, client):
        await until(lambda: ep.collector.statistics().freezes >= 1)
        body = (await client.get("/metrics")).text
        st = ep.collector.statistics()
    samples = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples["streammetrics_gc_freezes_total"] >= 1
    assert samples["streammetrics_gc_freezes_total"] <= st.freezes
    assert samples["streammetrics_gc_policy_collections_total"] >= 1
    assert samples["streammetrics_gc_frozen_objects"] > 0
    assert 0 < samples["streammetrics_gc_policy_last_collection_seconds"] < 10
