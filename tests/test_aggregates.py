"""Traces: span_start / span_end give total traces, active spans and a span latency per
component of its own; spans that never end expire after span_timeout_s and are counted."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import parse_blueprint
from streammetrics.components import Component
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.harness import Harness
from streammetrics.judge.health import HealthJudge
from streammetrics.prometheus.collector import SnapshotCollector
from streammetrics.snapshot import Snapshot
from streammetrics.windows import LATENCY_BOUNDS, bucket_index
from tests.support.http_app import FakeClock


def make(clock: FakeClock, **kw: Any) -> Aggregator:
    return Aggregator(clock=clock.monotonic, wall=clock.wall, **kw)


def bucket_mid(seconds: float) -> float:
    """The p50 of a single observation of ``seconds``: its bucket's midpoint."""
    i = bucket_index(seconds)
    lower = LATENCY_BOUNDS[i - 1] if i else 0.0
    return lower + (LATENCY_BOUNDS[i] - lower) * 0.5


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
    assert (api.span_latency.count, api.span_latency.p50) == (1, pytest.approx(bucket_mid(3.0)))
    assert (db.span_latency.count, db.span_latency.p50) == (1, pytest.approx(bucket_mid(0.5)))
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


def _prometheus(snap: Snapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the exposition of ``snap``, by sample name."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_span_figures_in_prometheus() -> None:
    clock = FakeClock()
    agg = make(clock, span_timeout_s=1.0)
    agg.fold_events(
        [
            Event("api", "span_start", trace_id="t1", span_id="a1"),
            Event("db", "span_start", trace_id="t1", span_id="d1"),
            Event("db", "processed"),
        ]
    )
    clock.advance(0.5)
    agg.fold_events([Event("api", "span_end", span_id="a1")])
    clock.advance(1.0)  # d1 expires
    got = _prometheus(HealthJudge().judge(agg.figures()))
    assert got["component_span_latency_p50_seconds"] == [
        ({"component": "api", "window": "60s"}, pytest.approx(bucket_mid(0.5)))
    ]
    assert [c["component"] for c, _v in got["component_span_latency_p99_seconds"]] == ["api"]
    assert got["spans_expired_total"] == [({}, 1.0)]
    assert got["spans_active"] == [({}, 0.0)]
    assert got["traces_total"] == [({}, 1.0)]


class Tracer(Component):
    """A component that reports spans: one that ends after 50 ms, one that never ends."""

    type_name = "Tracer"

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        emit = self.ctx.emit
        emit("span_start", trace_id="t1", span_id="quick")
        emit("span_start", trace_id="t2", span_id="lost")
        await anyio.sleep(0.05)
        emit("span_end", trace_id="t1", span_id="quick")
        await anyio.sleep_forever()


TRACED = """
system:
  name: traced
  components:
    - {name: worker, type: Source, config: {rate: 1}}
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05, span_timeout_s: 0.3}}
"""


@pytest.mark.anyio
async def test_a_real_endpoint_expires_a_span_after_its_configured_timeout() -> None:
    bp = parse_blueprint(TRACED)
    bp = dataclasses.replace(
        bp,
        components=tuple(
            dataclasses.replace(c, cls=Tracer, type="Tracer") if c.name == "worker" else c
            for c in bp.components
        ),
    )
    harness = Harness(bp, flush_interval=0.02)
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        metrics = harness.components["metrics"]
        assert isinstance(metrics, MetricsEndpoint)
        assert metrics.aggregator.span_timeout_s == 0.3
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics.port}") as client:
                body: dict[str, Any] = {}
                with anyio.fail_after(5):
                    while body.get("traces", {}).get("expired_spans") != 1:
                        body = (await client.get("/metrics/json")).json()
                        await anyio.sleep(0.02)
                assert body["traces"] == {
                    "total_traces": 2,
                    "active_spans": 0,
                    "completed_spans": 1,
                    "expired_spans": 1,
                }
                span = body["detailed_components"]["worker"]["span_latency"]
                assert span["count"] == 1
                assert 0.03 < span["p50"] < 1.0  # about 50 ms, to a histogram bucket
                assert body["detailed_components"]["metrics"]["span_latency"] is None
        finally:
            harness.stop()
