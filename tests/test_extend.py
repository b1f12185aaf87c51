"""Extension points: a subclass or a plugin adds routes and figures; custom collectors
follow prometheus-client's protocol, and a failing one never breaks a response."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import anyio
import httpx
import pytest
from litestar import get
from litestar.types import ControllerRouterHandler
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import MetricsEndpoint, MetricsPlugin
from streammetrics.http import MetricsService

pytestmark = pytest.mark.anyio


class QueueDepth(Collector):
    """A custom collector in prometheus-client's style."""

    def __init__(self) -> None:
        self.depth = 3

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("orders_queue_depth", "Orders waiting", labels=["queue"])
        g.add_metric(["main"], self.depth)
        yield g


class Broken(Collector):
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("exporter backend down")


class Junk(Collector):
    def collect(self) -> Iterator[Any]:
        yield {"not": "a metric"}


class Clash(Collector):
    """Reuses a built-in name: it would make the exposition invalid."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("system_health_score", "mine", value=0.1)


class CustomMetricsEndpoint(MetricsEndpoint):
    """The specification's shape: ``_setup_routes`` adds ``/custom-metrics``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue = QueueDepth()  # set after super(): the hooks run when the app is built

    def _setup_routes(self) -> None:
        super()._setup_routes()

        @get("/custom-metrics")
        async def custom_metrics() -> dict[str, Any]:
            return await self.collect_custom_metrics()

        self.app.register(custom_metrics)

    def collectors(self) -> Sequence[Collector]:
        return [*super().collectors(), self.queue]

    async def collect_custom_metrics(self) -> dict[str, Any]:
        return {"queue_depth": self.queue.depth, "endpoint": self.name}

    async def figures(self) -> Mapping[str, Any]:
        return await self.collect_custom_metrics()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def _json_when(client: httpx.AsyncClient, ok: Any, deadline_s: float = 5.0) -> Any:
    """GET /metrics/json until ``ok(body)``; the custom figures arrive with a tick."""
    deadline = time.monotonic() + deadline_s
    while True:
        body = (await client.get("/metrics/json")).json()
        if ok(body):
            return body
        assert time.monotonic() < deadline, body
        await anyio.sleep(0.05)


async def test_subclass_adds_a_route_a_collector_and_figures() -> None:
    ep = CustomMetricsEndpoint(name="custom", port=0, tick_s=0.1)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/custom-metrics")
        assert r.status_code == 200
        assert r.json() == {"queue_depth": 3, "endpoint": "custom"}
        ep.queue.depth = 5
        body = await _json_when(
            client,
            lambda b: (
                b["extra"].get("custom", {}).get("queue_depth") == 5
                and "orders_queue_depth" in b["custom"]
                and b["custom"]["orders_queue_depth"]["samples"][0]["value"] == 5
            ),
        )
        fam = body["custom"]["orders_queue_depth"]
        assert fam["type"] == "gauge"
        assert fam["samples"] == [
            {"name": "orders_queue_depth", "labels": {"queue": "main"}, "value": 5.0}
        ]
        assert body["errors"] == []
        fams = _families((await client.get("/metrics")).text)
        assert fams["orders_queue_depth"].samples[0].value == 5.0
        assert "system_health_score" in fams  # the built-ins are still there
        # The collector is healthy: its error series exists at zero.
        errs = fams["streammetrics_collector_errors"]
        assert [(s.labels, s.value) for s in errs.samples if s.name.endswith("_total")] == [
            ({"collector": "QueueDepth"}, 0.0)
        ]


async def test_existing_exporter_collectors_plug_in_unchanged() -> None:
    orders = Counter("orders_placed", "Orders placed", registry=None)
    orders.inc(4)
    ep = MetricsEndpoint(
        name="m", port=0, tick_s=0.1, collectors=[orders, ProcessCollector(registry=None)]
    )
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        fams = _families((await client.get("/metrics")).text)
        assert [s.value for s in fams["orders_placed"].samples if s.name.endswith("_total")] == [
            4.0
        ]
        assert fams["process_resident_memory_bytes"].samples[0].value > 0
        body = (await client.get("/metrics/json")).json()
        assert body["custom"]["orders_placed"]["type"] == "counter"
        assert "process_cpu_seconds" in body["custom"]


async def test_a_raising_collector_leaves_the_rest_served() -> None:
    good = QueueDepth()
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, collectors=[Broken(), good, Junk(), Clash()])
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/metrics")
        assert r.status_code == 200
        fams = _families(r.text)
        assert fams["orders_queue_depth"].samples[0].value == 3.0
        assert fams["system_health_score"].samples[0].value == 1.0  # the built-in one, not 0.1
        failures = {
            s.labels["collector"]: s.value
            for s in fams["streammetrics_collector_errors"].samples
            if s.name.endswith("_total")
        }
        assert failures["Broken"] >= 1 and failures["Junk"] >= 1 and failures["Clash"] >= 1
        assert failures["QueueDepth"] == 0
        body = (await client.get("/metrics/json")).json()
        assert set(body["custom"]) == {"orders_queue_depth"}
        errors = "\n".join(body["errors"])
        assert "collector 'Broken' failed: RuntimeError: exporter backend down" in errors
        assert "collector 'Junk' failed: TypeError" in errors
        assert "collector 'Clash' failed: ValueError: metric names already exposed" in errors
        assert "system_health_score" in errors
        health = await client.get("/health")
        assert health.status_code == 200  # collectors failing is not the system failing


async def test_a_hung_collector_times_out_and_the_rest_is_served() -> None:
    release = threading.Event()

    class Hung(Collector):
        def collect(self) -> Iterator[Metric]:
            release.wait(10)
            return iter(())

    service = MetricsService(None, tick_s=0.0, sample_timeout_s=0.2, collectors=[Hung()])
    ep = MetricsEndpoint(name="m", port=0)
    service.attach(ep.aggregator)
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


class OrdersPlugin(MetricsPlugin):
    name = "orders"

    def __init__(self) -> None:
        self.calls = 0

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        @get("/orders/stats")
        async def stats(service: streammetrics.http.Service) -> dict[str, Any]:
            snap = await service.snapshot()
            return {"components": snap.components.total}

        return [stats]

    def collectors(self) -> Sequence[Collector]:
        return [QueueDepth()]

    async def figures(self) -> Mapping[str, Any]:
        self.calls += 1
        return {"calls": self.calls}


class FailingFigures(MetricsPlugin):
    name = "flaky"

    async def figures(self) -> Mapping[str, Any]:
        raise ConnectionError("inventory service down")


async def test_plugins_add_routes_collectors_and_figures_and_fail_alone() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, plugins=[OrdersPlugin(), FailingFigures()])
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/orders/stats")
        assert r.status_code == 200 and r.json() == {"components": 1}
        body = await _json_when(client, lambda b: b["extra"].get("orders", {}).get("calls"))
        assert "orders_queue_depth" in body["custom"]
        assert "flaky" not in body["extra"]
        assert any(
            e == "figures 'flaky' failed: ConnectionError: inventory service down"
            for e in body["errors"]
        )


async def test_the_service_dependency_reaches_extra_routes_and_errors_keep_their_shape() -> None:
    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    class Boom(MetricsEndpoint):
        def route_handlers(self) -> Sequence[ControllerRouterHandler]:
            return [*super().route_handlers(), boom]

    ep = Boom(name="m", port=0)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/boom")
        assert r.status_code == 500
        assert r.json() == {"error": "internal error", "detail": "RuntimeError", "status_code": 500}
