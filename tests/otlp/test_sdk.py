"""The real OpenTelemetry SDK exporting to a live endpoint over OTLP/HTTP on loopback:
what it sends is what the endpoint counts, span for span."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from streammetrics.components.metrics import MetricsEndpoint
from tests.support.exposition import by_label, families

pytestmark = pytest.mark.anyio

#: Durations (seconds) well inside three different latency buckets.
DURATIONS = (0.003, 0.05, 0.5)


@asynccontextmanager
async def endpoint(**config: Any) -> AsyncIterator[tuple[MetricsEndpoint, httpx.AsyncClient]]:
    config.setdefault("otlp", {})
    ep = MetricsEndpoint(name="metrics", port=0, **config)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        async with httpx.AsyncClient(base_url=ep.url, timeout=5) as client:
            yield ep, client
        tg.cancel_scope.cancel()


def _export(url: str, service: str, plan: list[tuple[SpanKind, float, bool]], **kw: Any) -> None:
    """Record the planned spans (kind, seconds, failed) with the SDK, each in a trace of
    its own but every fourth, which joins the previous one's; flush them through a
    ``BatchSpanProcessor`` and an ``OTLPSpanExporter`` to ``url``."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=5, **kw)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    tracer = provider.get_tracer("tests.otlp")
    t0 = 1_700_000_000_000_000_000
    parent = None
    try:
        for i, (kind, seconds, failed) in enumerate(plan):
            ctx = trace.set_span_in_context(parent) if parent is not None and i % 4 == 3 else None
            span = tracer.start_span(f"op{i % 3}", kind=kind, start_time=t0, context=ctx)
            if failed:
                span.set_status(Status(StatusCode.ERROR, f"failed #{i}"))
            span.end(end_time=t0 + round(seconds * 1e9))
            parent = span
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()


def _plan(n: int, seed: int) -> list[tuple[SpanKind, float, bool]]:
    rng = random.Random(seed)
    kinds = [SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.CLIENT, SpanKind.INTERNAL]
    return [(rng.choice(kinds), rng.choice(DURATIONS), rng.random() < 0.25) for _ in range(n)]


def _expected(
    plan: list[tuple[SpanKind, float, bool]], buckets: tuple[float, ...]
) -> dict[str, Any]:
    """What the plan should fold to; ``hist`` over the exported ``buckets`` (+Inf last),
    ``le`` inclusive as Prometheus has it."""
    items = [(s, f) for k, s, f in plan if k in (SpanKind.SERVER, SpanKind.CONSUMER)]
    hist = [0] * (len(buckets) + 1)
    for s, _f in items:
        hist[bisect_left(buckets, s)] += 1
    return {
        "processed": sum(not f for _s, f in items),
        "errors": sum(f for _s, f in items),
        "hist": hist,
        "traces": sum(1 for i in range(len(plan)) if i % 4 != 3),
    }


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
async def test_the_sdk_s_spans_arrive_as_items_errors_latencies_and_traces(
    compression: Compression,
) -> None:
    plan = _plan(300, seed=7)
    rule = {"name": "SpanErrors", "expr": "error_rate > 0.1"}
    async with endpoint(tick_s=0.05, alerts=[rule]) as (ep, client):
        want = _expected(plan, ep.aggregator.histogram_buckets)
        await anyio.to_thread.run_sync(
            lambda: _export(ep.url, "checkout", plan, compression=compression)
        )
        snap = ep.aggregator.figures()
        c = snap.detailed_components["checkout"]
        # Every SERVER and CONSUMER span is one item; those with status ERROR failed.
        assert (c.items_processed, c.errors_encountered) == (want["processed"], want["errors"])
        assert want["errors"] > 10 and want["processed"] > 50  # the plan tests something
        assert snap.component_histograms["checkout"] == want["hist"]
        assert sum(1 for n in want["hist"] if n) == len(DURATIONS)  # three buckets apart
        assert c.latency.count == want["processed"] + want["errors"]
        assert c.last_error is not None and c.last_error.startswith("failed #")
        # Every span, of any kind, counts in traces and the span latency.
        assert snap.traces.completed_spans == len(plan)
        assert snap.traces.total_traces == want["traces"]
        assert snap.traces.active_spans == 0
        assert c.span_latency is not None and c.span_latency.count == len(plan)
        assert ep.otlp is not None and ep.otlp.statistics().accepted == len(plan)

        # The component is one like any other: its figures, health and Prometheus series.
        await anyio.sleep(0.1)  # the next tick's render
        doc = (await client.get("/metrics/json")).json()
        row = doc["detailed_components"]["checkout"]
        assert row["items_processed"] == want["processed"] and "health" in row
        assert (await client.get("/health")).json()["components"]["total"] == 2
        alerts = (await client.get("/alerts")).json()
        firing = {(a["name"], a["component"]) for a in alerts["alerts"]}
        assert ("SpanErrors", "checkout") in firing
        rate = want["errors"] / (want["processed"] + want["errors"])
        pending = {a["name"]: a["value"] for a in alerts["pending_alerts"]}
        assert pending["HighErrorRate"] == pytest.approx(rate)  # the built-in rule too
        fams = families((await client.get("/metrics")).text)
        processed = by_label(fams["component_items_processed"], "component", "_total")
        assert processed["checkout"] == want["processed"]
        errors = by_label(fams["component_errors"], "component", "_total")
        assert errors["checkout"] == want["errors"]


async def test_spans_grouped_by_service_and_span_name() -> None:
    plan = [(SpanKind.SERVER, 0.003, i % 5 == 0) for i in range(30)]
    async with endpoint(otlp={"group_by": "service_and_span"}) as (ep, _client):
        await anyio.to_thread.run_sync(lambda: _export(ep.url, "cart", plan))
        comps = ep.aggregator.figures().detailed_components
        got = {k: (c.items_processed, c.errors_encountered) for k, c in comps.items()}
        want = {
            f"cart:op{j}": (
                sum(1 for i in range(30) if i % 3 == j and i % 5),
                sum(1 for i in range(30) if i % 3 == j and not i % 5),
            )
            for j in range(3)
        }
        assert {k: v for k, v in got.items() if k.startswith("cart")} == want
