"""The span table the aggregator keeps: span_start / span_end give total traces, active spans
and a span latency per component of its own; spans that never end expire after
span_timeout_s and are counted."""

from __future__ import annotations

from typing import Any

import pytest

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from tests.support.http_app import FakeClock


def make(clock: FakeClock, **kw: Any) -> Aggregator:
    return Aggregator(clock=clock.monotonic, wall=clock.wall, **kw)


def test_span_latency_is_per_component_and_apart_from_item_latency() -> None:
    clock = FakeClock()
    agg = make(clock)
    agg.fold_events(
        [
            Event("api", "span_start", trace_id="t1", span_id="a1"),
            Event("db", "span_start", trace_id="t1", span_id="d1"),
            Event("api", "processed", latency=0.001),
            Event("worker", "processed", latency=0.002),
        ]
    )
    clock.advance(0.5)
    agg.fold_events([Event("db", "span_end", trace_id="t1", span_id="d1")])  # 0.5 s
    clock.advance(2.5)
    agg.fold_events([Event("api", "span_end", trace_id="t1", span_id="a1")])  # 3.0 s
    snap = agg.figures()
    api, db, worker = (snap.detailed_components[n] for n in ("api", "db", "worker"))
    assert api.span_latency is not None and db.span_latency is not None
    # one span each: the bucket it is in is clamped to its duration
    assert (api.span_latency.count, api.span_latency.p50) == (1, pytest.approx(3.0))
    assert (db.span_latency.count, db.span_latency.p50) == (1, pytest.approx(0.5))
    assert worker.span_latency is None  # never ended a span: null, not zero
    # the item latency keeps its old meaning (items and spans both) and field
    assert api.latency.count == 2
    assert worker.latency.count == 1
    assert snap.traces.total_traces == 1
    assert (snap.traces.active_spans, snap.traces.completed_spans) == (0, 2)


def test_span_end_with_its_own_latency_and_a_span_end_nobody_started() -> None:
    clock = FakeClock()
    agg = make(clock)
    agg.fold_events([Event("c", "span_end", span_id="x", latency=0.25)])
    agg.fold_events([Event("c", "span_end", span_id="y")])  # no start, no latency
    snap = agg.figures()
    lat = snap.detailed_components["c"].span_latency
    assert lat is not None and lat.count == 1
    assert snap.traces.completed_spans == 2


def test_spans_that_never_end_expire_and_are_counted() -> None:
    clock = FakeClock()
    agg = make(clock, span_timeout_s=10.0)
    agg.fold_events(
        [
            Event("a", "span_start", trace_id="t1", span_id="s1"),
            Event("a", "span_start", trace_id="t2", span_id="s2"),
        ]
    )
    clock.advance(5)
    agg.fold_events([Event("a", "span_start", trace_id="t2", span_id="s3")])
    t = agg.figures().traces
    assert (t.total_traces, t.active_spans, t.expired_spans) == (2, 3, 0)
    clock.advance(5.5)  # s1, s2 are 10.5 s old
    t = agg.figures().traces
    assert (t.active_spans, t.expired_spans) == (1, 2)
    # a late end of an expired span still counts as completed, without a made-up duration
    agg.fold_events([Event("a", "span_end", span_id="s1")])
    snap = agg.figures()
    assert (snap.traces.completed_spans, snap.traces.expired_spans) == (1, 2)
    assert snap.detailed_components["a"].span_latency is None
    clock.advance(5)
    t = agg.figures().traces
    assert (t.active_spans, t.expired_spans, t.total_traces) == (0, 3, 2)
