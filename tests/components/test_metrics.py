"""Extension points: a subclass overrides the endpoint's hooks (``setup_routes()``, or the
specification's ``_setup_routes()``; ``collectors()``; ``figures()``), or a plugin brings
the same; custom collectors follow prometheus-client's protocol, and a failing one never
breaks a response."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any

import anyio
import httpx
import pytest
from litestar import get
from litestar.params import Body, FromPath
from litestar.types import ControllerRouterHandler
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import MetricsEndpoint, MetricsPlugin
from streammetrics.views.tick_cache import TickCache

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


class Exporters(MetricsPlugin):
    """Collectors that exist already (metric objects, an exporter's), brought as they are."""

    name = "exporters"

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collectors(self) -> Sequence[Collector]:
        return self._collectors


# The specification's custom endpoint, verbatim: it must run unchanged.
class CustomMetricsEndpoint(MetricsEndpoint):
    def _setup_routes(self):
        super()._setup_routes()

        @self.app.get("/custom-metrics")
        async def custom_metrics():
            return await self.collect_custom_metrics()


class QueueMetricsEndpoint(MetricsEndpoint):
    """The public hooks: a route, its own ``collect_custom_metrics``, a collector and
    figures."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue = QueueDepth()  # set after super(): the hooks run when the app is built

    def setup_routes(self) -> None:
        super().setup_routes()

        @self.app.get("/custom-metrics")
        async def custom_metrics() -> dict[str, Any]:
            return await self.collect_custom_metrics()

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
    ep = QueueMetricsEndpoint(name="custom", port=0, tick_s=0.1)
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


async def test_the_specifications_custom_endpoint_serves_its_route() -> None:
    orders = Counter("orders_placed", "Orders placed", registry=None)
    orders.inc(2)
    ep = CustomMetricsEndpoint(name="spec_custom", port=0, tick_s=0.1, plugins=[Exporters(orders)])
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/custom-metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert set(body) == {"custom", "extra", "errors", "timestamp"}
        fam = body["custom"]["orders_placed"]
        assert (fam["type"], fam["collector"]) == ("counter", "Counter:orders_placed")
        total = [s["value"] for s in fam["samples"] if s["name"] == "orders_placed_total"]
        assert total == [2.0]
        assert body["errors"] == []
        # the same figures as /metrics/json's sections
        full = (await client.get("/metrics/json")).json()
        assert full["custom"]["orders_placed"]["samples"] == fam["samples"]
        listed = (await client.get("/")).json()["endpoints"]
        assert listed["/custom-metrics"] == "Custom route (custom_metrics)"
        assert "/health" in listed  # beside the built-in routes, not instead of them
        head = await client.head("/custom-metrics")
        assert (head.status_code, head.content) == (200, b"")
        ep.service.set_unavailable("harness gone for the test")
        gone = await client.get("/custom-metrics")
        assert gone.status_code == 503
        assert gone.json()["error"] == "harness unavailable"


async def test_app_decorators_register_each_method() -> None:
    """``app.get/post/put/patch/delete`` take Litestar's options; a sync function says
    how to run (Litestar's own rule), an annotated one keeps its annotation."""
    seen: list[str] = []

    class Routes(MetricsEndpoint):
        def setup_routes(self) -> None:
            super().setup_routes()
            app = self.app

            @app.post("/jobs", status_code=201, summary="Start a job")
            async def start(data: Annotated[dict[str, int], Body()]) -> dict[str, int]:
                seen.append("post")
                return {"started": data["n"]}

            @app.put("/jobs/{job_id:int}", sync_to_thread=False)
            def replace(job_id: FromPath[int]):  # type: ignore[no-untyped-def]
                seen.append("put")
                return [job_id, "replaced"]

            @app.patch("/jobs/{job_id:int}")
            async def amend(job_id: FromPath[int]):  # type: ignore[no-untyped-def]
                seen.append("patch")
                return {"amended": job_id}

            @app.delete("/jobs/{job_id:int}", status_code=200)
            async def drop(job_id: FromPath[int], service: streammetrics.http.Service):  # type: ignore[no-untyped-def]
                seen.append("delete")
                return {"dropped": job_id, "endpoint": service.name}

    ep = Routes(name="routes", port=0)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.post("/jobs", json={"n": 3})
        assert (r.status_code, r.json()) == (201, {"started": 3})
        r = await client.put("/jobs/7")
        assert (r.status_code, r.json()) == (200, [7, "replaced"])
        r = await client.patch("/jobs/7")
        assert (r.status_code, r.json()) == (200, {"amended": 7})
        r = await client.delete("/jobs/7")
        assert (r.status_code, r.json()) == (200, {"dropped": 7, "endpoint": "routes"})
        bad = await client.put("/jobs/seven")
        assert bad.status_code == 404  # the path parameter's type is Litestar's routing
        wrong = await client.get("/jobs")
        assert wrong.status_code == 405
        assert "POST" in wrong.headers["allow"]
        listed = (await client.get("/")).json()["endpoints"]
        schema = (await client.get("/schema/openapi.json")).json()
    assert seen == ["post", "put", "patch", "delete"]
    assert listed["/jobs"] == "Start a job (POST)"
    assert listed["/jobs/{job_id:int}"] == "Custom route (replace) (DELETE, PATCH, PUT)"
    assert set(schema["paths"]["/jobs/{job_id}"]) == {"put", "patch", "delete"}
    assert schema["paths"]["/jobs"]["post"]["responses"]["201"]


async def test_existing_exporter_collectors_plug_in_unchanged() -> None:
    orders = Counter("orders_placed", "Orders placed", registry=None)
    orders.inc(4)
    ep = MetricsEndpoint(
        name="m", port=0, tick_s=0.1, plugins=[Exporters(orders, ProcessCollector(registry=None))]
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
    ep = MetricsEndpoint(
        name="m", port=0, tick_s=0.1, plugins=[Exporters(Broken(), good, Junk(), Clash())]
    )
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
    class Boom(MetricsEndpoint):
        def setup_routes(self) -> None:
            super().setup_routes()

            @self.app.get("/boom")
            async def boom() -> None:
                raise RuntimeError("secret detail")

    ep = Boom(name="m", port=0)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/boom")
        assert r.status_code == 500
        assert r.json() == {"error": "internal error", "detail": "RuntimeError", "status_code": 500}
