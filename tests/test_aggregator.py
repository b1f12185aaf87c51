"""Aggregator with a hand-driven monotonic clock and wall clock: every figure of the
snapshot is worked out by hand from what was folded and when."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, overload

import msgspec
import pytest

from streammetrics.aggregator import (
    _HOLD_ALL,
    _HOLD_COMPONENTS,
    _HOLD_EACH,
    Aggregator,
    AggregatorStatistics,
)
from streammetrics.buckets import DEFAULT_HISTOGRAM_BUCKETS, DEFAULT_LADDER, LATENCY_BOUNDS
from streammetrics.judge.health import (
    HealthConfig,
    HealthJudge,
)
from streammetrics.model.events import KINDS, Delta, Event, Rejection
from streammetrics.snapshot import BreakerStatus, Deduction, Figures, ProcessStats, Snapshot
from streammetrics.windows import RollingWindow, WindowStats
from tests.support.histograms import exported_histogram, exported_index, histogram
from tests.support.loop import with_turns

W0 = 1_700_000_000.0  # wall time when the monotonic clock reads 0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return W0 + self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw: object) -> Aggregator:
    return Aggregator(clock=clock.mono, wall=clock.wall, **kw)  # type: ignore[arg-type]


def snapshot(agg: Aggregator, health: HealthConfig | None = None, **read: Any) -> Snapshot:
    """The aggregator's figures as an endpoint serves them: judged by a ``HealthJudge``
    (a new one each time: no stream has a stall history here; judge/test_health has those)."""
    return HealthJudge(health).judge(agg.figures(**read))


# One latency of 0.010 s: its ladder bucket (0.00905, 0.01] is clamped to the latency
# itself (within the float32 rounding a completed slot keeps its extremes in).
P50_OF_ONE_10MS = 0.010


def test_fold_events_figures_by_hand(clock: Clock) -> None:
    agg = make(clock)
    agg.register_component("api", "APIEndpoint")
    clock.t = 10.0
    rejected = agg.fold_events(
        [
            Event("api", "processed", count=40, latency=0.010),
            Event("api", "error", count=10, detail="boom", timestamp=W0 - 5),
        ]
    )
    assert rejected == []
    clock.t = 20.0
    snap = snapshot(agg)
    c = snap.detailed_components["api"]
    assert (c.items_processed, c.errors_encountered) == (40, 10)
    assert c.error_rate == pytest.approx(10 / 50)
    assert c.items_per_second == pytest.approx(40 / 20)  # window since t=0, 60 s view
    assert c.last_activity == W0 - 5  # the event's own timestamp
    assert c.last_error == "boom"
    assert (c.status, c.type) == ("running", "APIEndpoint")
    assert c.latency.count == 1
    assert c.latency.p50 == pytest.approx(P50_OF_ONE_10MS)
    # error rate 0.2: over the 0.05 budget, not over 5 x 0.05 -> penalty 0.2
    assert c.health == pytest.approx(0.8)
    assert c.is_healthy  # 0.8 >= healthy_threshold 0.8
    assert snap.health_score == pytest.approx(0.8)
    assert snap.system_status == "healthy"
    assert [(d.component, d.penalty) for d in snap.reasons] == [("api", 0.2)]
    assert snap.components.total == 1
    assert (snap.components.healthy, snap.components.running) == (1, 1)
    assert snap.performance.items_per_second == pytest.approx(2.0)
    assert snap.performance.error_rate == pytest.approx(0.2)
    assert snap.performance.window_seconds == 60
    assert (snap.timestamp, snap.uptime_seconds) == (W0 + 20, 20.0)
    assert set(c.windows) == {"10s", "60s", "300s"}
    assert c.windows["10s"].processed == 0  # folded in slot 10; the 10 s view is slots 11..20
    assert c.windows["300s"].processed == 40
    assert snap.rejected == {}
    assert snap.errors == []
    assert sum(snap.total_histogram) == 1
    assert snap.component_histograms["api"] == exported_histogram(0.010)
    assert snap.latency_sums["api"] == pytest.approx(0.010)
    # the whole snapshot is encodable
    assert b'"health_score":0.8' in msgspec.json.encode(snap)


def test_last_activity_is_wall_time_without_timestamp(clock: Clock) -> None:
    agg = make(clock)
    clock.t = 7.0
    agg.fold_events([Event("x", "processed")])
    clock.t = 9.0
    assert snapshot(agg).detailed_components["x"].last_activity == W0 + 7.0


def test_rates_follow_the_view_span(clock: Clock) -> None:
    agg = make(clock)
    clock.t = 100.0
    agg.fold_events([Event("a", "processed", count=30)])
    clock.t = 100.5
    # "a" was first seen at t=100: its window is 0.5 s old -> span 1 s (one slot)
    assert snapshot(agg).detailed_components["a"].items_per_second == pytest.approx(30.0)
    # the system window started with the aggregator (t=0): 60 s view is slots 41..100
    assert snapshot(agg).performance.items_per_second == pytest.approx(30 / 59.5)
    clock.t = 161.0  # slot 100 has left the 60 s view; it is still in the 300 s one
    snap = snapshot(agg)
    assert snap.detailed_components["a"].items_per_second == 0.0
    assert snap.detailed_components["a"].items_processed == 30  # lifetime
    snap300 = snapshot(agg, view=300)
    assert snap300.performance.window_seconds == 300
    assert snap300.detailed_components["a"].items_per_second == pytest.approx(30 / 61)
    # 300 s view of the system window: periods 0..16 -> since t=0
    assert snap300.performance.items_per_second == pytest.approx(30 / 161)


def test_fold_deltas(clock: Clock) -> None:
    agg = make(clock)
    clock.t = 4.0
    agg.fold_deltas(
        [
            Delta(
                "w",
                processed=30,
                errors=3,
                bytes=1000,
                latency_counts=histogram(0.010, 0.010, 0.5),
                latency_sum=0.52,
                last_error="bad item",
            ),
            Delta("w", messages=12, bytes=120, stream="w->s:input"),
        ]
    )
    clock.t = 8.0
    snap = snapshot(agg)
    c = snap.detailed_components["w"]
    assert (c.items_processed, c.errors_encountered, c.status) == (30, 3, "running")
    assert c.error_rate == pytest.approx(3 / 33)
    assert c.items_per_second == pytest.approx(30 / 4)  # "w" first seen at t=4
    assert c.last_activity == W0 + 4.0
    assert c.last_error == "bad item"
    assert c.latency.count == 3
    # rank 1.5 of 3: inside the ladder bucket (0.00905, 0.01] (2 there), 1.5/2 of the way up
    assert c.latency.p50 == pytest.approx(0.009050967 + (0.01 - 0.009050967) * 0.75)
    assert snap.latency_sums["w"] == pytest.approx(0.52)
    s = snap.streaming.streams["w->s:input"]
    assert s.total_messages == 12
    assert s.message_rate == pytest.approx(12 / 4)
    assert snap.performance.message_rate == pytest.approx(12 / 8)  # system window since t=0
    assert agg.statistics() == AggregatorStatistics(
        components=1, streams=1, events_folded=0, deltas_folded=2, rejected={}, active_spans=0
    )


def test_status_transitions(clock: Clock) -> None:
    agg = make(clock)
    agg.register_component("c")

    def status() -> str:
        return snapshot(agg).detailed_components["c"].status

    assert status() == "registered"
    agg.fold_events([Event("c", "started")])
    assert status() == "running"
    agg.fold_events([Event("c", "stopped")])
    assert status() == "stopped"
    snap = snapshot(agg)
    assert snap.detailed_components["c"].health == 0.0  # stopped: penalty 1.0
    assert not snap.detailed_components["c"].is_healthy
    assert (snap.components.running, snap.components.healthy) == (0, 0)
    assert snap.system_status == "unhealthy"
    agg.fold_events([Event("c", "heartbeat")])
    assert status() == "running"  # a heartbeat revives a stopped component
    agg.fold_events([Event("c", "stopped", detail="failed")])
    assert status() == "failed"
    agg.fold_events([Event("c", "heartbeat")])
    assert status() == "failed"  # but not a failed one
    agg.fold_events([Event("c", "started")])
    assert status() == "running"
    agg.register_component("d")
    agg.fold_events([Event("d", "error")])
    assert snapshot(agg).detailed_components["d"].status == "running"


def test_heartbeat_timeout(clock: Clock) -> None:
    agg = make(clock)
    agg.fold_events([Event("hb", "heartbeat")])
    clock.t = 30.0
    assert snapshot(agg).detailed_components["hb"].health == 1.0  # 30 s is not > 30 s
    clock.t = 31.0
    snap = snapshot(agg)
    assert snap.detailed_components["hb"].health == 0.0
    (d,) = snap.reasons
    assert d.penalty == 1.0
    assert "no heartbeat for 31.0s" in d.reason
    agg.fold_events([Event("hb", "heartbeat")])
    assert snapshot(agg).detailed_components["hb"].health == 1.0


def test_breaker_transitions(clock: Clock) -> None:
    agg = make(clock)
    agg.register_component("quiet")
    agg.register_component("guarded", breaker=True)
    clock.t = 5.0
    agg.fold_events([Event("b", "breaker", detail="open")])
    clock.t = 15.0
    snap = snapshot(agg)
    # No breaker, no entry; one registered with a breaker is closed before any transition.
    assert "quiet" not in snap.circuit_breakers
    assert snap.circuit_breakers["guarded"] == BreakerStatus("closed", 0, None, 0.0, 0)
    assert snap.circuit_breakers["b"] == BreakerStatus("open", 1, W0 + 5, 10.0, 1)
    assert snap.detailed_components["b"].health == 0.5
    clock.t = 20.0
    agg.fold_events([Event("b", "breaker", detail="half_open")])
    clock.t = 25.0
    snap = snapshot(agg)
    assert snap.circuit_breakers["b"] == BreakerStatus("half_open", 1, W0 + 5, 20.0, 2)
    assert snap.detailed_components["b"].health == 0.75
    clock.t = 30.0
    agg.fold_events([Event("b", "breaker", detail="closed")])
    agg.fold_events([Event("b", "breaker", detail="closed")])  # no change, no transition
    clock.t = 40.0
    snap = snapshot(agg)
    assert snap.circuit_breakers["b"] == BreakerStatus("closed", 1, W0 + 5, 25.0, 3)
    assert snap.detailed_components["b"].health == 1.0
    clock.t = 50.0
    agg.fold_events([Event("b", "breaker", detail="open")])
    clock.t = 52.0
    assert snapshot(agg).circuit_breakers["b"] == BreakerStatus("open", 2, W0 + 50, 27.0, 4)
    clock.t = 60.0
    agg.fold_events([Event("b", "breaker", detail="closed")])  # time open adds up: 25 + 10
    clock.t = 70.0
    assert snapshot(agg).circuit_breakers["b"] == BreakerStatus("closed", 2, W0 + 50, 35.0, 5)


def test_breaker_half_open_counts_as_open_time(clock: Clock) -> None:
    agg = make(clock)
    clock.t = 10.0
    agg.fold_events([Event("b", "breaker", detail="half_open")])  # straight from closed
    clock.t = 12.0
    agg.fold_events([Event("b", "breaker", detail="open")])
    clock.t = 15.0
    snap = snapshot(agg)
    # half_open is not a failure; the open at t=12 is; open time runs since t=10
    assert snap.circuit_breakers["b"] == BreakerStatus("open", 1, W0 + 12, 5.0, 2)
    agg.fold_events([Event("b", "breaker", detail="closed")])
    clock.t = 100.0
    assert snapshot(agg).circuit_breakers["b"].time_open_seconds == 5.0


def test_breaker_event_with_bad_state_is_rejected(clock: Clock) -> None:
    agg = make(clock)
    (r,) = agg.fold_events(
        [Event("b", "processed"), Event("b", "breaker", detail="ajar"), Event("b", "processed")]
    )
    assert (r.index, r.path) == (1, "events[1].detail")
    assert "ajar" in r.reason
    snap = snapshot(agg)
    assert snap.rejected == {"malformed": 1}
    assert snap.detailed_components["b"].items_processed == 2
    assert "b" not in snap.circuit_breakers  # the bad event did not give it a breaker
    assert snap.detailed_components["b"].health == 1.0


def test_spans_traces_and_expiry(clock: Clock) -> None:
    agg = make(clock, span_timeout_s=300.0)
    agg.fold_events([Event("a", "span_start", trace_id="t1", span_id="s1")])
    clock.t = 1.0
    agg.fold_events([Event("a", "span_start", trace_id="t1", span_id="s2")])
    clock.t = 2.0
    agg.fold_events([Event("a", "span_start", trace_id="t2", span_id="s3")])
    clock.t = 3.0
    agg.fold_events([Event("a", "span_end", trace_id="t1", span_id="s1")])  # took 3 s
    snap = snapshot(agg)
    assert snap.traces.total_traces == 2
    assert (snap.traces.active_spans, snap.traces.completed_spans) == (2, 1)
    assert snap.traces.expired_spans == 0
    lat = snap.detailed_components["a"].latency
    assert lat.count == 1
    # 3.0 s is in the ladder bucket (2.5, 3.2768], clamped to the one latency it holds
    assert lat.p50 == 3.0
    # a span_end with its own latency uses it
    agg.fold_events([Event("a", "span_end", span_id="unknown", latency=0.010)])
    snap = snapshot(agg)
    assert snap.traces.completed_spans == 2
    assert snap.detailed_components["a"].latency.count == 2
    # spans older than span_timeout_s expire when a snapshot is read
    clock.t = 301.5  # limit 1.5: s2 (t=1) expires, s3 (t=2) is still open
    snap = snapshot(agg)
    assert (snap.traces.active_spans, snap.traces.expired_spans) == (1, 1)
    clock.t = 302.0  # s3 is exactly span_timeout_s old: not yet expired
    assert snapshot(agg).traces.active_spans == 1
    clock.t = 302.5
    snap = snapshot(agg)
    assert (snap.traces.active_spans, snap.traces.expired_spans) == (0, 2)
    assert snap.traces.total_traces == 2
    assert agg.statistics().active_spans == 0


def test_restarted_span_does_not_hold_back_expiry_of_older_spans(clock: Clock) -> None:
    agg = make(clock, span_timeout_s=300.0)
    agg.fold_events([Event("a", "span_start", span_id="s1")])
    clock.t = 1.0
    agg.fold_events([Event("a", "span_start", span_id="s2")])
    clock.t = 2.0
    agg.fold_events([Event("a", "span_start", span_id="s1")])  # s1 again (a retry)
    clock.t = 301.5  # limit 1.5: s2 (t=1) is overdue; s1 restarted at t=2 is not
    t = snapshot(agg).traces
    assert (t.active_spans, t.expired_spans) == (1, 1)


def test_span_table_is_bounded(clock: Clock) -> None:
    agg = make(clock, max_spans=3)
    agg.fold_events([Event("a", "span_start", trace_id=f"t{i}", span_id=f"s{i}") for i in range(5)])
    t = snapshot(agg).traces
    assert (t.total_traces, t.active_spans, t.expired_spans) == (5, 3, 2)


def test_streams_with_messages_and_buffers(clock: Clock) -> None:
    agg = make(clock)
    agg.register_stream(
        "a->b:input",
        from_component="a",
        to_component="b",
        stream_name="input",
        buffer=lambda: (3, 10),
    )

    def broken() -> tuple[int, int]:
        raise RuntimeError("binding closed")

    agg.register_stream("a->c:input", from_component="a", to_component="c", buffer=broken)
    clock.t = 10.0
    agg.fold_deltas([Delta("a", messages=12, bytes=10, stream="a->b:input")])
    agg.fold_events([Event("x", "processed", count=6, stream="x-out")])
    clock.t = 20.0
    snap = snapshot(agg)
    s = snap.streaming.streams["a->b:input"]
    assert (s.total_messages, s.buffer_used, s.buffer_size) == (12, 3, 10)
    assert (s.from_component, s.to_component, s.stream_name) == ("a", "b", "input")
    assert s.message_rate == pytest.approx(12 / 20)  # registered at t=0
    broken_s = snap.streaming.streams["a->c:input"]
    assert (broken_s.total_messages, broken_s.buffer_used, broken_s.buffer_size) == (0, None, None)
    (err,) = snap.errors
    assert "a->c:input" in err
    assert "binding closed" in err
    x = snap.streaming.streams["x-out"]  # registered on its first message (t=10)
    assert (x.total_messages, x.stream_name) == (6, "x-out")
    assert x.message_rate == pytest.approx(6 / 10)
    assert snap.streaming.total_messages == 18
    # active: has messages in the view, or a buffer to watch
    assert snap.streaming.active_streams == 3
    assert snap.streaming.message_rate == pytest.approx(12 / 20 + 0 + 6 / 10)
    # the system window counts stream messages from probes and from events alike
    assert snap.performance.message_rate == pytest.approx(18 / 20)
    assert snap.detailed_components["x"].items_processed == 6
    # errors passed in by the caller are kept alongside
    assert snapshot(agg, errors=["psutil failed"]).errors[0] == "psutil failed"


def test_cardinality_limit(clock: Clock) -> None:
    agg = make(clock, max_components=2)
    agg.register_component("a")
    rejected = agg.fold_events(
        [
            Event("b", "processed"),
            Event("c", "processed", count=5),
            Event("a", "processed"),
            Event("d", "error"),
        ]
    )
    assert [(r.index, r.path) for r in rejected] == [
        (1, "events[1].component"),
        (3, "events[3].component"),
    ]
    assert "limit 2" in rejected[0].reason
    assert "'c'" in rejected[0].reason
    agg.fold_deltas([Delta("e", processed=3), Delta("a", processed=1)])
    snap = snapshot(agg)
    assert set(snap.detailed_components) == {"a", "b"}
    assert snap.rejected == {"cardinality": 3}
    assert snap.performance.items_per_second == pytest.approx(3 / 1)  # a, b, a: span 1 s
    assert agg.statistics().rejected == {"cardinality": 3}
    agg.reject("malformed", 4)
    assert snapshot(agg).rejected == {"cardinality": 3, "malformed": 4}


def test_stream_cardinality_limit(clock: Clock) -> None:
    agg = make(clock, max_streams=1)
    agg.fold_events([Event("a", "processed", stream="s1"), Event("a", "processed", stream="s2")])
    snap = snapshot(agg)
    assert set(snap.streaming.streams) == {"s1"}
    assert snap.rejected == {"cardinality": 1}
    # the refused stream's messages still count in the system's, as a probe's do (1 + 1
    # above, 2 + 1 + 3 here, in one 1 s slot); each event on it is a rejection of its own
    agg.fold_events(
        [
            Event("a", "processed", stream="s2", count=2),
            Event("a", "processed", stream="s1"),
            Event("a", "error", stream="s2", count=3),
        ]
    )
    snap = snapshot(agg)
    assert snap.rejected == {"cardinality": 3}
    assert snap.streaming.streams["s1"].total_messages == 2
    assert agg.figures(view=10).performance.message_rate == 8 / 1.0
    a = snap.detailed_components["a"]
    assert (a.items_processed, a.errors_encountered) == (5, 3)


def test_observe_subset_ignores_other_components(clock: Clock) -> None:
    agg = make(clock, observe=["a"])
    assert agg.observes("a")
    assert not agg.observes("b")
    assert agg.fold_events([Event("a", "processed"), Event("b", "error")]) == []
    agg.fold_deltas([Delta("b", processed=5), Delta("a", processed=2)])
    snap = snapshot(agg)
    assert set(snap.detailed_components) == {"a"}
    assert snap.detailed_components["a"].items_processed == 3
    assert snap.performance.error_rate == 0.0
    assert snap.rejected == {}  # not ours: ignored, not rejected


def test_snapshot_with_no_components(clock: Clock) -> None:
    snap = snapshot(make(clock))
    assert isinstance(snap, Snapshot)
    assert (snap.health_score, snap.system_status) == (1.0, "healthy")
    assert snap.performance.latency.p50 is None
    assert snap.performance.items_per_second == 0.0
    assert snap.components.total == 0


def test_health_rollup_through_the_snapshot(clock: Clock) -> None:
    cfg = HealthConfig(memory_limit_mb=500, cpu_limit_percent=80)
    agg = make(clock)
    clock.t = 1.0
    agg.fold_events(
        [
            Event("a", "processed", count=7),
            Event("a", "error", count=3),  # 0.3 > 5 x 0.05 -> 0.6
            Event("b", "stopped"),  # 1.0
            Event("c", "processed", count=9),
            Event("c", "error", count=1),  # 0.1 -> 0.2
            Event("c", "breaker", detail="half_open"),  # 0.25
        ]
    )
    snap = snapshot(agg, cfg, process=ProcessStats(memory_usage_mb=400.0, cpu_usage_percent=10.0))
    health = {n: c.health for n, c in snap.detailed_components.items()}
    assert health == {"a": 0.4, "b": 0.0, "c": pytest.approx(0.55)}
    mean = (0.4 + 0.0 + 0.55) / 3
    assert snap.health_score == pytest.approx(round(mean, 4))
    assert snap.system_status == "unhealthy"  # 0.3167 < 0.5
    assert snap.performance.memory_usage_mb == 400.0
    over = snapshot(agg, cfg, process=ProcessStats(memory_usage_mb=501.0, cpu_usage_percent=95.0))
    assert over.health_score == pytest.approx(round(mean - 0.2, 4))
    assert [(d.component, d.penalty) for d in over.reasons if d.component is None] == [
        (None, 0.1),
        (None, 0.1),
    ]
    assert over.performance.cpu_usage_percent == 95.0


def test_reasons_name_the_component(clock: Clock) -> None:
    agg = make(clock)
    agg.fold_events([Event("z", "breaker", detail="open")])
    assert snapshot(agg).reasons == [Deduction("z", "circuit breaker open", 0.5)]


def test_a_batch_folds_like_its_events_one_by_one(clock: Clock) -> None:
    """fold_events sums a batch per component before it touches the windows; the
    figures must be those of folding each event on its own."""
    batch = [
        Event(component="a", kind="processed", latency=0.01, bytes=10),
        Event(component="b", kind="error", latency=2.0, detail="boom"),
        Event(component="a", kind="processed", count=5, latency=0.3),
        Event(component="a", kind="error", detail="late"),
        Event(component="c", kind="processed", count=3),
        Event(component="a", kind="processed", latency=0.01, stream="s"),
        Event(component="b", kind="heartbeat"),
    ]
    together, apart = make(clock), make(clock)
    assert together.fold_events(batch) == []
    for ev in batch:
        assert apart.fold_events([ev]) == []
    s1, s2 = snapshot(together), snapshot(apart)
    assert msgspec.structs.replace(s1, uptime_seconds=0.0) == msgspec.structs.replace(
        s2, uptime_seconds=0.0
    )
    a = s1.detailed_components["a"]
    assert (a.items_processed, a.errors_encountered, a.last_error) == (7, 1, "late")
    assert sum(s1.component_histograms["a"]) == 3
    assert s1.component_histograms["b"][exported_index(2.0)] == 1
    assert sum(s1.total_histogram) == 4
    assert together.statistics().events_folded == len(batch)
    assert s1.streaming.streams["s"].total_messages == 1


@pytest.mark.anyio
async def test_figures_async_matches_figures_and_lets_the_loop_run(clock: Clock) -> None:
    agg = make(clock)
    for i in range(1000):
        agg.fold_events(
            [
                Event(f"c{i}", "processed", count=i + 1, latency=0.001 * (i % 50 + 1)),
                Event(f"c{i}", "error", count=i % 3),
            ]
        )
    clock.t += 7.0
    expected = agg.figures()
    got, turns = await with_turns(agg.figures_async(chunk=100))
    assert msgspec.json.encode(got) == msgspec.json.encode(expected)
    # 1,000 components in chunks of 100: the other task ran between the chunks
    assert turns >= 9


# -- one batch, or its events one by one --------------------------------------------------

_NAMES = [f"c{i}" for i in range(8)]
_STREAMS = ["s0", "s1", "s2"]


def _random_event(rng: random.Random, names: list[str]) -> Event:
    """One event of any kind, with the fields a producer (or code, which skips
    validation) may set: counts of 0 and more, exact bucket bounds, +Inf latencies,
    timestamps out of order, streams, bytes, bad breaker details."""
    kind = rng.choices(
        KINDS,  # processed, error, started, stopped, heartbeat, breaker, span_start, span_end
        weights=[60, 15, 3, 3, 4, 5, 5, 5],
    )[0]
    r = rng.random()
    latency = (
        None
        if r < 0.15
        else rng.choice(LATENCY_BOUNDS)
        if r < 0.25
        else 500.0
        if r < 0.27
        else math.nan
        if r < 0.28
        else rng.lognormvariate(math.log(0.005), 1.5)
    )
    detail = None
    if kind == "breaker":
        detail = rng.choice(["open", "closed", "half_open", "ajar"])
    elif kind in ("error", "stopped") and rng.random() < 0.5:
        detail = rng.choice(["boom", "failed", "late"])
    return Event(
        component=rng.choice(names),
        kind=kind,  # type: ignore[arg-type]
        timestamp=W0 + rng.uniform(-100.0, 100.0) if rng.random() < 0.3 else None,
        count=rng.choice([0, 1, 1, 1, 1, 2, 7]),
        latency=latency,
        stream=rng.choice(_STREAMS) if rng.random() < 0.15 else None,
        detail=detail,
        bytes=rng.choice([0, 0, 0, 10, 1500]),
        trace_id=rng.choice(["t1", "t2"]) if kind.startswith("span") else None,
        span_id=rng.choice(["a", "b", "c"]) if kind.startswith("span") else None,
    )


def _comparable(f: Figures) -> Any:
    """The figures as builtins, latency sums to 1e-9 s: a batch sums a component's
    latencies before adding them to its window, one by one adds them in turn, so the
    running sums (which slots leaving a view are subtracted from) may differ in the last
    bits. Nothing else may differ."""

    def walk(x: Any, key: str = "") -> Any:
        if isinstance(x, float) and key == "latency_sum":
            return "nan" if math.isnan(x) else round(x, 9) + 0.0
        if isinstance(x, dict):
            sums = key == "latency_sums"
            return {k: walk(v, "latency_sum" if sums else k) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, key) for v in x]
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        return x

    return walk(msgspec.to_builtins(msgspec.structs.replace(f, uptime_seconds=0.0)))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"max_components": 5, "max_streams": 2},
        {"observe": ["c0", "c1", "c2", "c7"]},
        {"max_components": 4, "component_ttl_s": 3.0},
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_random_batches_fold_as_their_events_one_by_one(
    clock: Clock, settings: dict[str, Any], seed: int
) -> None:
    """The batched fold (the common event summed in a loop of its own, latencies
    bucketed in bulk per component) must end with the figures, the statistics and the
    rejections of folding each event alone, whatever the mix: every kind, rejections
    (the component and stream limits, bad breaker details), components never
    registered, timestamps out of order, and batches from 1 event to 400 (a component
    with 16 latencies or more in one batch has them sorted, fewer bisected one by one)."""
    rng = random.Random(seed)
    together, apart = make(clock, **settings), make(clock, **settings)
    together.register_component("c3", "Source")
    apart.register_component("c3", "Source")
    for round_ in range(40):
        clock.t += rng.choice([0.0, 0.3, 1.0, 2.5, 11.0])
        n = rng.choice([1, 2, 5, 30, 120, 400])
        names = _NAMES if rng.random() < 0.7 else _NAMES[:2]  # few names: long runs
        batch = [_random_event(rng, names) for _ in range(n)]
        got = together.fold_events(batch)
        want = []
        for i, ev in enumerate(batch):
            for r in apart.fold_events([ev]):
                assert r.index == 0
                want.append(Rejection(i, r.path.replace("events[0]", f"events[{i}]"), r.reason))
        assert got == want, f"round {round_}"
        assert together.statistics() == apart.statistics()
        for view in (10, 60, 300):
            assert _comparable(together.figures(view=view)) == _comparable(
                apart.figures(view=view)
            ), f"round {round_}, view {view}"
    assert together.statistics().events_folded > 0


def _mostly_plain_event(rng: random.Random, names: list[str]) -> Event:
    """Mostly the plain event (processed, count 1, a latency, nothing else), which
    ``fold_events`` sums in a loop of its own, interleaved with what makes it leave
    that loop: errors with and without detail, counts other than 1, no latency, bytes,
    streams, timestamps, other kinds."""
    r = rng.random()
    if r < 0.08:
        return _random_event(rng, names)
    latency = rng.lognormvariate(math.log(0.005), 1.0)
    if r < 0.12:
        return Event(rng.choice(names), "error", latency=latency)
    if r < 0.14:
        return Event(rng.choice(names), "error", latency=latency, detail="boom")
    if r < 0.16:
        return Event(rng.choice(names), "processed", count=rng.choice([0, 2, 9]), latency=latency)
    if r < 0.18:
        return Event(rng.choice(names), "processed")
    if r < 0.20:
        return Event(rng.choice(names), "processed", latency=latency, bytes=100)
    if r < 0.22:
        return Event(rng.choice(names), "processed", latency=latency, stream=rng.choice(_STREAMS))
    if r < 0.26:
        return Event(
            rng.choice(names), "processed", latency=latency, timestamp=W0 + rng.uniform(-9, 9)
        )
    return Event(rng.choice(names), "processed", latency=latency)


@pytest.mark.parametrize("settings", [{}, {"max_components": 5, "max_streams": 2}])
@pytest.mark.parametrize("seed", range(3))
def test_mostly_plain_batches_fold_as_their_events_one_by_one(
    clock: Clock, settings: dict[str, Any], seed: int
) -> None:
    """The plain event's own loop (its count taken from how many latencies it kept)
    must end with the figures, statistics and rejections of folding each event alone,
    and with exactly the processed and error totals of the events, however the plain
    events interleave with the others (a plain event after a timestamped one resets
    last_activity to arrival time, an error between plain ones is counted apart)."""
    rng = random.Random(seed)
    together, apart = make(clock, **settings), make(clock, **settings)
    totals: dict[str, list[int]] = {}
    for round_ in range(30):
        clock.t += rng.choice([0.0, 0.4, 1.0, 3.0])
        n = rng.choice([1, 3, 40, 300, 1000])
        batch = [_mostly_plain_event(rng, _NAMES) for _ in range(n)]
        got = together.fold_events(batch)
        want = []
        for i, ev in enumerate(batch):
            for r in apart.fold_events([ev]):
                want.append(Rejection(i, r.path.replace("events[0]", f"events[{i}]"), r.reason))
        refused = {r.index for r in got if r.path.endswith(".component")}
        for i, ev in enumerate(batch):
            if i not in refused and ev.kind in ("processed", "error"):
                pe = totals.setdefault(ev.component, [0, 0])
                pe[ev.kind == "error"] += ev.count
        assert got == want, f"round {round_}"
        assert together.statistics() == apart.statistics()
        figures = together.figures()
        assert _comparable(figures) == _comparable(apart.figures()), f"round {round_}"
        assert {
            name: [c.items_processed, c.errors_encountered]
            for name, c in figures.detailed_components.items()
            if name in totals
        } == totals


def test_a_kind_string_made_by_code_folds_like_the_decoded_one(clock: Clock) -> None:
    """The plain event's loop knows the decoder's ``"processed"`` by identity; the same
    word built at run time (another object) must fold the same, through the next step."""
    built = "".join(["proc", "essed"])
    assert built == KINDS[0] == "processed" and built is not KINDS[0]
    rng = random.Random(5)
    lats = [rng.lognormvariate(math.log(0.005), 1.0) for _ in range(200)]
    figures = []
    for kind in ("processed", built):
        clock.t = 0.0
        agg = make(clock)
        batch = [Event(f"c{i % 3}", kind, latency=x) for i, x in enumerate(lats)]  # type: ignore[arg-type]
        assert agg.fold_events(batch) == []
        figures.append(_comparable(agg.figures()))
        assert sum(c.items_processed for c in agg.figures().detailed_components.values()) == 200
    assert figures[0] == figures[1]


def test_a_tuple_or_any_sequence_folds_like_a_list(clock: Clock) -> None:
    batch = [Event("a", "processed", latency=0.001 * i) for i in range(1, 40)]
    batch.append(Event("a", "breaker", detail="ajar"))
    figures = []
    for seq in (batch, tuple(batch), _Seq(batch)):
        clock.t = 0.0
        agg = make(clock)
        rejected = agg.fold_events(seq)
        assert [(r.index, r.path) for r in rejected] == [(39, "events[39].detail")]
        figures.append(_comparable(agg.figures()))
    assert figures[0] == figures[1] == figures[2]


class _Seq(Sequence[Event]):
    """A Sequence that is neither a list nor a tuple."""

    def __init__(self, items: list[Event]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Event: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Event]: ...
    def __getitem__(self, i: int | slice) -> Event | Sequence[Event]:
        return self._items[i]


# -- latencies held for bucketing --------------------------------------------------------


def _rounded(views: Sequence[WindowStats]) -> list[Any]:
    """Views as builtins, latency sums to 1e-9 s (summed in another order, they may
    differ in the last bits)."""
    out = []
    for v in views:
        b = msgspec.to_builtins(v)
        b["latency_sum"] = round(b["latency_sum"], 9)
        out.append(b)
    return out


@pytest.mark.parametrize("later", ["events", "deltas"])
def test_held_latencies_land_in_the_slot_they_arrived_in(clock: Clock, later: str) -> None:
    """``fold_events`` holds latencies until its slot ends (or a read): a fold in a
    later slot, of events or of probe deltas, buckets them first, into the slot they
    came in, as a window fed each event as it came has them. The 10 s view tells: by
    t=111.5 the slot of t=100.2 has left it, the slot of t=105.5 has not."""
    ref = RollingWindow(100.2, bounds=DEFAULT_LADDER.bounds)  # where the component begins
    agg = make(clock)
    clock.t = 100.2
    agg.fold_events([Event("api", "processed", latency=0.004) for _ in range(300)])
    agg.fold_events([Event("api", "processed", latency=0.02) for _ in range(3)])
    for lat in [0.004] * 300 + [0.02] * 3:
        ref.add(100.2, processed=1, latency=lat)
    clock.t = 105.5  # another slot: what was held is bucketed first, at 100.2
    if later == "events":
        agg.fold_events([Event("api", "processed", latency=0.5)])
        ref.add(105.5, processed=1, latency=0.5)
    else:
        counts = [0] * DEFAULT_LADDER.nbuckets
        counts[30] = 1
        agg.fold_deltas([Delta("api", processed=1, latency_counts=counts, latency_sum=0.5)])
        ref.add(105.5, processed=1)
        ref.add_histogram(105.5, counts, 0.5)
    clock.t = 111.5
    figures = agg.figures()
    windows = figures.detailed_components["api"].windows
    assert windows is not None
    got = _rounded([windows["10s"], windows["60s"], windows["300s"]])
    assert got == _rounded(ref.views(111.5))
    assert ref.view(111.5, 10).latency_count == 1  # t=105.5's only
    assert ref.view(111.5, 60).latency_count == 304
    assert sum(figures.total_histogram) == 304


@pytest.mark.parametrize(("per_batch", "components"), [(1, 200), (50, 200), (5_000, 200), (50, 3)])
def test_many_held_latencies_fold_exactly(clock: Clock, per_batch: int, components: int) -> None:
    """However many are held (past one component's bound or all components'), what is
    held stays within those bounds, and a read sees every latency in its bucket,
    counted once, as many as events."""
    agg = make(clock)
    # 200: past _HOLD_COMPONENTS, and 200 x 255 held would be past _HOLD_ALL; 3: each
    # past _HOLD_EACH in a few batches
    names = [f"c{i}" for i in range(components)]
    rng = random.Random(per_batch)
    want: dict[str, list[float]] = {n: [] for n in names}
    clock.t = 5.0
    for i in range(60_000 // per_batch):
        batch = []
        for _ in range(per_batch):
            name = rng.choice(names)
            lat = rng.choice([*LATENCY_BOUNDS[:20], *DEFAULT_HISTOGRAM_BUCKETS, 0.0031, 700.0])
            batch.append(Event(name, "processed", latency=lat))
            want[name].append(lat)
        assert agg.fold_events(batch) == []
        if i % 20 and components > 3:
            continue
        # what is held stays within its bounds, whatever the batches (memory)
        held = agg._held  # the bound is what is tested
        assert agg._held_n == sum(map(len, held.values())) < _HOLD_ALL
        assert max(map(len, held.values()), default=0) < _HOLD_EACH
        assert len(held) <= _HOLD_COMPONENTS
    figures = agg.figures()
    for name, lats in want.items():
        assert figures.component_histograms[name] == exported_histogram(*lats)
        c = figures.detailed_components[name]
        assert c.items_processed == c.latency.count == len(lats)
        assert figures.latency_sums[name] == pytest.approx(sum(lats), rel=1e-12)
    assert figures.total_histogram == exported_histogram(*(x for v in want.values() for x in v))
