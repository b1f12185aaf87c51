"""Circuit breakers: every transition driven by a hand-moved clock, then a real pipeline
whose consumer trips, holds items in its binding while open and recovers, as
``/components``, ``/metrics/json`` and ``/metrics`` show it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streammetrics.blueprint import parse_blueprint
from streammetrics.breaker import BreakerConfig, CircuitBreaker
from streammetrics.errors import BlueprintError
from streammetrics.events import Delta, Event, Rejection
from streammetrics.harness import Harness
from streammetrics.snapshot import BreakerState


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


Moves = list[tuple[BreakerState, BreakerState]]


def make(clock: Clock, **config: Any) -> tuple[CircuitBreaker, Moves]:
    moves: Moves = []
    b = CircuitBreaker(
        BreakerConfig(**config),
        clock=clock,
        on_transition=lambda old, new, _b: moves.append((old, new)),
    )
    return b, moves


# -- unit: each transition by hand ------------------------------------------------------------


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=3, failure_rate=None)
    for _ in range(2):
        b.record_failure()
    b.record_success()  # the streak is broken
    b.record_failure()
    b.record_failure()
    assert (b.state, b.consecutive, moves) == ("closed", 2, [])
    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    assert moves == [("closed", "open")]
    st = b.statistics()
    assert (st.failure_count, st.consecutive_failures, st.times_opened, st.transitions) == (
        5,
        3,
        1,
        1,
    )


def test_open_refuses_until_the_reset_timeout_then_half_opens() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=1, reset_timeout_s=10.0)
    b.record_failure()
    assert b.state == "open"
    assert b.wait_time() == 10.0
    clock.t += 9.999
    assert not b.allow()
    assert b.wait_time() == pytest.approx(0.001)
    assert b.state == "open"
    clock.t += 0.001  # exactly reset_timeout_s later
    assert b.wait_time() == 0.0
    assert b.allow()
    assert b.state == "half_open"
    assert moves == [("closed", "open"), ("open", "half_open")]
    assert b.statistics().rejected_waits == 1


def test_half_open_lets_a_limited_number_of_trials_through_and_closes_on_success() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=1, reset_timeout_s=5.0, half_open_max_calls=3)
    b.record_failure()
    clock.t += 5.0
    assert [b.allow() for _ in range(4)] == [True, True, True, False]  # 3 trials in flight
    assert b.wait_time() > 0
    b.record_success()
    b.record_success()
    assert b.state == "half_open"  # 2 of 3
    assert not b.allow()  # the third trial is still out
    b.record_success()
    assert b.state == "closed"
    assert moves[-1] == ("half_open", "closed")
    assert b.allow()
    assert b.consecutive == 0


def test_a_failed_trial_opens_it_again_for_a_full_timeout() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=1, reset_timeout_s=5.0, half_open_max_calls=2)
    b.record_failure()
    clock.t += 5.0
    assert b.allow()
    b.record_success()
    assert b.allow()
    b.record_failure()  # one success then a failure: open again
    assert b.state == "open"
    assert b.wait_time() == 5.0  # the timer starts over
    clock.t += 5.0
    assert b.allow()
    assert [m[1] for m in moves] == ["open", "half_open", "open", "half_open"]
    assert b.statistics().times_opened == 2


def test_trials_whose_outcome_never_comes_back_are_written_off() -> None:
    clock = Clock()
    b, _moves = make(clock, failure_threshold=1, reset_timeout_s=2.0, half_open_max_calls=1)
    b.record_failure()
    clock.t += 2.0
    assert b.allow()  # this trial's item is lost: no success, no failure
    assert not b.allow()
    clock.t += 1.0
    assert not b.allow()
    assert b.wait_time() == pytest.approx(1.0)
    clock.t += 1.0  # reset_timeout_s without an outcome
    assert b.allow()  # a new trial
    b.record_success()
    assert b.state == "closed"


def test_failure_rate_opens_it_once_min_calls_were_seen() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=100, failure_rate=0.5, min_calls=10, window_s=10)
    for i in range(9):  # 5 failures of 9 calls: over the rate, under min_calls
        (b.record_failure if i % 2 == 0 else b.record_success)()
    assert b.state == "closed"
    b.record_success()  # 10 calls, 5 failed: the rate is checked on failures only
    assert b.state == "closed"
    b.record_failure()  # 11 calls, 6 failed = 0.545 >= 0.5
    assert b.state == "open"
    assert moves == [("closed", "open")]


def test_failure_rate_forgets_calls_that_left_the_window() -> None:
    clock = Clock()
    b, _ = make(clock, failure_threshold=100, failure_rate=0.5, min_calls=4, window_s=10)
    for _ in range(3):
        b.record_failure()
    clock.t += 11.0  # those three left the 10 s window
    for _ in range(3):
        b.record_success()
    b.record_failure()  # 4 calls in the window, 1 failed: 0.25
    assert b.state == "closed"
    b.record_failure()
    b.record_failure()  # 6 calls, 3 failed: 0.5
    assert b.state == "open"


def test_closing_starts_the_rate_window_afresh() -> None:
    clock = Clock()
    b, _ = make(
        clock,
        failure_threshold=100,
        failure_rate=0.5,
        min_calls=2,
        reset_timeout_s=1.0,
        half_open_max_calls=1,
    )
    b.record_failure()
    b.record_failure()
    assert b.state == "open"
    clock.t += 1.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed"
    b.record_failure()  # alone in the new window: under min_calls
    assert b.state == "closed"


def test_failure_count_only_when_the_rate_is_null() -> None:
    clock = Clock()
    b, _ = make(clock, failure_threshold=4, failure_rate=None, min_calls=1)
    for _ in range(3):
        b.record_failure()
        b.record_success()
    assert b.state == "closed"  # 50 % failing, but never 4 in a row


def test_a_disabled_breaker_never_opens() -> None:
    clock = Clock()
    b, moves = make(clock, enabled=False, failure_threshold=1, min_calls=1)
    for _ in range(50):
        b.record_failure()
        assert b.allow()
    assert (b.state, moves, b.wait_time()) == ("closed", [], 0.0)
    assert b.statistics().failure_count == 50  # still counted


def test_defaults_are_sane() -> None:
    cfg = BreakerConfig()
    assert (cfg.enabled, cfg.failure_threshold, cfg.reset_timeout_s, cfg.half_open_max_calls) == (
        True,
        5,
        30.0,
        3,
    )
    assert (cfg.failure_rate, cfg.min_calls, cfg.window_s) == (0.5, 20, 60)


@pytest.mark.parametrize(
    ("breaker", "path", "says"),
    [
        ("{failure_threshold: 0}", "circuit_breaker.failure_threshold", ">= 1"),
        ("{reset_timeout_s: 0}", "circuit_breaker.reset_timeout_s", "> 0"),
        ("{half_open_max_calls: -1}", "circuit_breaker.half_open_max_calls", ">= 1"),
        ("{failure_rate: 1.5}", "circuit_breaker.failure_rate", "<= 1"),
        ("{window_s: 30}", "circuit_breaker.window_s", "Invalid enum value 30"),
        ("{reset_timeout: 5}", "circuit_breaker", "reset_timeout"),
    ],
)
def test_bad_breaker_config_is_refused_with_its_path(breaker: str, path: str, says: str) -> None:
    text = f"""
system:
  name: s
  components:
    - {{name: api, type: APIEndpoint, config: {{port: 0}}}}
    - {{name: proc, type: StreamProcessor, config: {{circuit_breaker: {breaker}}}}}
"""
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(text)
    assert info.value.path.startswith(f"system.components[1].config.{path}")
    assert says in str(info.value)


# -- a real pipeline ----------------------------------------------------------------------------

PIPELINE = """
system:
  name: breaker_e2e
  components:
    - {name: api, type: APIEndpoint, config: {port: 0}}
    - name: proc
      type: StreamProcessor
      config:
        circuit_breaker:
          failure_threshold: 3
          failure_rate: null
          reset_timeout_s: 1.0
          half_open_max_calls: 2
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05}}
  bindings:
    - {from_component: api, to_component: proc, buffer: 50}
"""
KEY = "api->proc:input"


class Recorder:
    """Every breaker event the bus carries, in order."""

    def __init__(self) -> None:
        self.breaker: list[tuple[str, str | None, float | None]] = []

    def fold_events(self, events: Sequence[Event]) -> list[Rejection]:
        self.breaker += [
            (e.component, e.detail, e.timestamp) for e in events if e.kind == "breaker"
        ]
        return []

    def fold_deltas(self, deltas: Sequence[Delta]) -> None:
        pass


@asynccontextmanager
async def pipeline(
    text: str,
) -> AsyncIterator[tuple[Harness, httpx.AsyncClient, httpx.AsyncClient, Recorder]]:
    harness = Harness(parse_blueprint(text), flush_interval=0.02)
    rec = Recorder()
    harness.bus.subscribe(rec)
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        ports = {w.component: w.port for w in harness.listening}
        try:
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}") as api,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['metrics']}") as metrics,
            ):
                yield harness, api, metrics, rec
        finally:
            harness.stop()


async def poll(
    client: httpx.AsyncClient,
    path: str,
    cond: Callable[[dict[str, Any]], bool],
    within: float = 5.0,
) -> dict[str, Any]:
    """GET ``path`` until ``cond`` holds of the body; the last body if it never does."""
    body: dict[str, Any] = {}
    with anyio.move_on_after(within):
        while True:
            r = await client.get(path)
            body = r.json()
            if cond(body):
                return body
            await anyio.sleep(0.01)
    raise AssertionError(f"{path} never got there within {within}s; last: {body}")


async def prom_breaker_state(metrics: httpx.AsyncClient) -> dict[str, float]:
    r = await metrics.get("/metrics")
    assert r.status_code == 200
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(r.text):
        if fam.name in ("circuit_breaker_state", "circuit_breaker_failures"):
            for s in fam.samples:
                if s.labels.get("component") == "proc":
                    out[s.name] = s.value
    return out


def proc_breaker(body: dict[str, Any]) -> dict[str, Any]:
    b: dict[str, Any] = body["circuit_breakers"]["proc"]
    return b


@pytest.mark.anyio
async def test_a_failing_consumer_trips_holds_items_and_recovers() -> None:
    async with pipeline(PIPELINE) as (harness, api, metrics, rec):
        t_before = time.time()
        for _ in range(3):
            assert (await api.post("/items", json={"fail": True})).status_code == 202
        # While open, good items are accepted and wait in the binding.
        for i in range(10):
            assert (await api.post("/items", json={"n": i})).status_code == 202
        body = await poll(
            metrics,
            "/components",
            lambda b: (
                proc_breaker(b)["state"] == "open"
                and b["streaming"]["streams"][KEY]["buffer_used"] == 10
                and b["components"]["proc"]["errors_encountered"] == 3
            ),
        )
        br = proc_breaker(body)
        assert br["failure_count"] == 1  # tripped once
        assert t_before <= br["last_failure"] <= time.time()
        assert br["transitions"] == 1
        proc = body["components"]["proc"]
        assert (proc["items_processed"], proc["errors_encountered"]) == (0, 3)
        assert await prom_breaker_state(metrics) == {
            "circuit_breaker_state": 1.0,
            "circuit_breaker_failures_total": 1.0,
        }
        first_trip = br["last_failure"]

        # After reset_timeout_s: two trial items succeed, it closes, the rest follow.
        body = await poll(
            metrics,
            "/components",
            lambda b: (
                proc_breaker(b)["state"] == "closed"
                and b["components"]["proc"]["items_processed"] == 10
            ),
        )
        br = proc_breaker(body)
        assert br["transitions"] == 3
        assert br["failure_count"] == 1
        assert br["last_failure"] == first_trip
        assert 1.0 <= br["time_open_seconds"] < 5.0  # open, then half_open for the trials
        assert body["streaming"]["streams"][KEY]["buffer_used"] == 0
        assert (await prom_breaker_state(metrics))["circuit_breaker_state"] == 0.0
        assert [(c, d) for c, d, _t in rec.breaker] == [
            ("proc", "open"),
            ("proc", "half_open"),
            ("proc", "closed"),
        ]

        # Trip it again and let it half-open with nothing waiting: it stays half-open
        # until an item comes to try.
        for _ in range(3):
            await api.post("/items", json={"fail": True})
        body = await poll(metrics, "/metrics/json", lambda b: proc_breaker(b)["state"] == "open")
        assert proc_breaker(body)["failure_count"] == 2
        assert proc_breaker(body)["last_failure"] > first_trip
        body = await poll(
            metrics, "/metrics/json", lambda b: proc_breaker(b)["state"] == "half_open"
        )
        assert (await prom_breaker_state(metrics))["circuit_breaker_state"] == 2.0
        health = (await metrics.get("/health")).json()
        assert {"component": "proc", "reason": "circuit breaker half_open", "penalty": 0.25} in (
            health["reasons"]
        )
        for i in range(2):
            await api.post("/items", json={"n": 100 + i})
        body = await poll(
            metrics,
            "/metrics/json",
            lambda b: (
                proc_breaker(b)["state"] == "closed"
                and b["detailed_components"]["proc"]["items_processed"] == 12
                and b["detailed_components"]["api"]["items_processed"] == 18
                and b["streaming"]["streams"][KEY]["total_messages"] == 18
            ),
        )
        # Nothing lost: what the API accepted was either processed or failed, once.
        comps = body["detailed_components"]
        assert comps["api"]["items_processed"] == 18
        assert (comps["proc"]["items_processed"], comps["proc"]["errors_encountered"]) == (12, 6)
        assert body["streaming"]["streams"][KEY]["total_messages"] == 18
        br = proc_breaker(body)
        assert (br["state"], br["failure_count"], br["transitions"]) == ("closed", 2, 6)
        assert br["time_open_seconds"] >= 2.0  # two open periods of at least 1 s each
        stats = harness.components["proc"].ctx.breaker
        assert stats is not None
        assert msgspec.structs.asdict(stats.statistics()) | {"rejected_waits": 0} == {
            "state": "closed",
            "failure_count": 6,
            "consecutive_failures": 0,
            "transitions": 6,
            "times_opened": 2,
            "rejected_waits": 0,
        }
        assert [d for _c, d, _t in rec.breaker] == [
            "open",
            "half_open",
            "closed",
            "open",
            "half_open",
            "closed",
        ]


@pytest.mark.anyio
async def test_components_without_a_breaker_show_closed_and_a_disabled_one_never_opens() -> None:
    text = PIPELINE.replace(
        "failure_threshold: 3", "enabled: false\n          failure_threshold: 1"
    )
    async with pipeline(text) as (harness, api, metrics, rec):
        assert harness.components["proc"].ctx.breaker is None
        for _ in range(5):
            await api.post("/items", json={"fail": True})
        await api.post("/items", json={"n": 1})
        body = await poll(
            metrics, "/components", lambda b: b["components"]["proc"]["items_processed"] == 1
        )
        assert body["components"]["proc"]["errors_encountered"] == 5
        for name in ("api", "proc", "metrics"):
            assert body["circuit_breakers"][name] == {
                "state": "closed",
                "failure_count": 0,
                "last_failure": None,
                "time_open_seconds": 0.0,
                "transitions": 0,
            }
        assert rec.breaker == []


def test_a_breaker_on_a_component_that_takes_no_items_is_refused() -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(
            """
system:
  name: s
  components:
    - {name: api, type: APIEndpoint, config: {port: 0, circuit_breaker: {failure_threshold: 2}}}
"""
        )
    assert info.value.path == "system.components[0].config.circuit_breaker"
    assert "APIEndpoint 'api' does not consume items" in str(info.value)
