"""The tick cache: snapshots, process samples, custom collectors and Prometheus renders made at
most once per tick and shared by every request of it; what hangs times out into partial data."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streammetrics import (
    MetricsEndpoint,
)
from streammetrics.http.app import create_app
from streammetrics.snapshot import ProcessStats
from streammetrics.views.tick_cache import TickCache
from tests.support.exposition import OPENMETRICS, families, value
from tests.support.http_app import (
    API_DONE,
    FakeClock,
    running,
    seed,
    service_for,
)

pytestmark = pytest.mark.anyio


async def test_a_hung_collector_times_out_and_the_rest_is_served() -> None:
    release = threading.Event()

    class Hung(Collector):
        def collect(self) -> Iterator[Metric]:
            release.wait(10)
            return iter(())

    ep = MetricsEndpoint(name="m", port=0)
    service = TickCache(ep.aggregator, tick_s=0.0, sample_timeout_s=0.2)
    service.add_collector(Hung())
    try:
        t0 = time.monotonic()
        snap = await service.snapshot()
        assert time.monotonic() - t0 < 2.0
        assert snap.errors == ["custom collectors timed out after 0.2s"]
        # While the first call is still stuck, the next tick says so rather than
        # piling up another thread behind it.
        snap = await service.snapshot()
        assert snap.errors == ["custom collectors: the previous collection is still running"]
        assert b"system_health_score" in await service.prometheus()
    finally:
        release.set()


async def test_hung_sampler_times_out_into_partial_data(clock: FakeClock) -> None:
    release = threading.Event()

    class HungSampler:
        def sample(self) -> ProcessStats:
            release.wait(5)
            return ProcessStats(1.0, 1.0)

    service = service_for(seed(clock), clock, sampler=HungSampler())
    service.sample_timeout_s = 0.1
    try:
        with anyio.fail_after(3):
            snap = await service.snapshot()
    finally:
        release.set()
    assert snap.errors == ["process sampler timed out after 0.1s"]
    assert snap.performance.memory_usage_mb is None
    assert snap.detailed_components["task_api"].items_processed == API_DONE


async def _append(into: list[Any], coro: Any) -> None:
    into.append(await coro)


async def test_requests_waiting_for_a_build_are_woken_together(clock: FakeClock) -> None:
    """Requests that must wait for a snapshot build leave together when it is done, not
    one per event-loop turn as they would from a lock's queue (that made seconds of
    latency with hundreds of connections)."""
    gate = threading.Event()

    class GatedSampler:
        def sample(self) -> ProcessStats:
            gate.wait(5)
            return ProcessStats(1.0, 1.0)

    service = service_for(seed(clock), clock, sampler=GatedSampler())
    done: list[Any] = []
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(_append, done, service.snapshot())
                await anyio.sleep(0.05)  # one builds (held in the sampler), 49 wait
                assert not done
                gate.set()
                # the build ends in a worker thread: poll for it
                while not service.statistics().snapshots_built:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
                turns = 0
                while len(done) < 50:
                    await anyio.lowlevel.checkpoint()  # one event-loop turn
                    turns += 1
                assert turns <= 3
    finally:
        gate.set()
    assert len({id(s) for s in done}) == 1
    assert service.statistics().snapshots_built == 1


async def test_while_a_build_runs_requests_get_the_snapshot_before_it(clock: FakeClock) -> None:
    """A slow build (10,000 components take a good part of a second) holds up no request
    once a snapshot exists: they get the previous one at once, and the next once built."""
    gate = threading.Event()
    gate.set()

    class GatedSampler:
        def sample(self) -> ProcessStats:
            gate.wait(5)
            return ProcessStats(1.0, 1.0)

    service = service_for(seed(clock), clock, sampler=GatedSampler())
    try:
        first = await service.snapshot()
        clock.advance(service.tick_s)  # stale: the next request builds
        gate.clear()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                built: list[Any] = []
                tg.start_soon(_append, built, service.snapshot())
                await anyio.sleep(0.05)  # held in the sampler
                t0 = time.perf_counter()
                during = [await service.snapshot() for _ in range(20)]
                assert time.perf_counter() - t0 < 0.5
                assert all(s is first for s in during)
                assert service.statistics().stale_snapshot_hits == 20
                gate.set()
        assert built[0] is not first
        assert await service.snapshot() is built[0]
        # Too old to excuse: past the bound, a request waits for the build after all.
        clock.advance(100 * service.tick_s)
        gate.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_append, built, service.snapshot())
            await anyio.sleep(0.05)
            waiting: list[Any] = []
            tg.start_soon(_append, waiting, service.snapshot())
            await anyio.sleep(0.05)
            assert not waiting
            gate.set()
        assert waiting[0] is built[-1]
    finally:
        gate.set()


async def test_render_is_cached_per_tick(service: TickCache, clock: FakeClock) -> None:
    async with running(create_app(service)) as client:
        first = await client.get("/metrics")
        second = await client.get("/metrics")
        assert first.text == second.text
        stats = service.statistics()
        assert (stats.renders, stats.render_cache_hits) == (1, 1)

        async with anyio.create_task_group() as tg:  # a scrape storm within one tick
            for _ in range(20):
                tg.start_soon(client.get, "/metrics")
        assert service.statistics().renders == 1

        await client.get("/metrics", headers={"accept": OPENMETRICS})
        assert service.statistics().renders == 2  # one render per format

        clock.advance(1.0)  # the tick turns: a new snapshot, a new render
        await client.get("/metrics")
    stats = service.statistics()
    assert stats.renders == 3
    assert stats.render_cache_hits == 21
    assert stats.snapshots_built == 2


async def test_concurrent_first_scrapes_share_one_render(service: TickCache) -> None:
    bodies: list[bytes] = []

    async def scrape() -> None:
        bodies.append(await service.prometheus())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(scrape)
    assert len(set(bodies)) == 1
    assert service.statistics().renders == 1
    assert service.statistics().snapshots_built == 1


async def test_extra_collectors_are_rendered_with_the_snapshot(clock: FakeClock) -> None:
    custom = Counter("orders_placed", "Orders placed", registry=None)
    custom.inc(4)
    service = TickCache(seed(clock), clock=clock.monotonic)
    service.add_collector(custom)
    fams = families((await service.prometheus()).decode())
    assert value(fams["orders_placed"], "orders_placed_total") == 4
    assert "system_health_score" in fams
    # No sampler: the process gauges are left out rather than exposed as made-up zeros.
    assert "streammetrics_process_resident_memory_bytes" not in fams
