"""MetricsEndpoint: made in code (its probes, its settings checked as it is built),
extended by a subclass that overrides its hooks (``setup_routes()``, or the
specification's ``_setup_routes()``; ``collectors()``; ``figures()``), and configured
by a blueprint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from litestar.params import Body, FromPath
from prometheus_client import Counter
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import MetricsEndpoint
from streammetrics.blueprint import parse_blueprint
from streammetrics.components import Component
from streammetrics.errors import ConfigError
from streammetrics.harness import Harness
from tests.support.collectors import Exporters, QueueDepth
from tests.support.exposition import families
from tests.support.waiting import poll, poll_counted

pytestmark = pytest.mark.anyio


# -- made in code --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_endpoint_in_code_serves_what_its_probes_count() -> None:
    ep = MetricsEndpoint(name="embedded", port=0, tick_s=0.1)
    worker = ep.probe("worker")
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        for _ in range(7):
            worker.processed(latency=0.01)
        worker.error(detail="ValueError: bad item")
        body = await poll_counted(ep.url + "/metrics/json", "worker")
        tg.cancel_scope.cancel()
    w = body["detailed_components"]["worker"]  # type: ignore[index]
    assert w["items_processed"] == 7
    assert w["errors_encountered"] == 1
    assert w["last_error"] == "ValueError: bad item"
    # The endpoint lists itself, as it does in a blueprint.
    assert body["detailed_components"]["embedded"]["type"] == "MetricsEndpoint"  # type: ignore[index]


def test_probe_is_listed_before_its_first_count() -> None:
    ep = MetricsEndpoint(name="m", port=0)
    ep.probe("idle_worker")
    snap = ep.aggregator.figures()
    assert snap.detailed_components["idle_worker"].status == "registered"


def test_bad_keyword_names_the_setting_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="m", port=70000)
    assert info.value.path == "config.port"
    assert info.value.value == 70000
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="m", port=0, tick=1)
    assert info.value.path == "config.tick"
    assert "no setting 'tick'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        MetricsEndpoint(name="bad name!", port=0)
    assert info.value.path == "name"


def test_port_is_required() -> None:
    with pytest.raises(ConfigError, match="port"):
        MetricsEndpoint(name="m")


def test_url_before_listening_says_so() -> None:
    with pytest.raises(RuntimeError, match="not listening yet"):
        _ = MetricsEndpoint(name="m", port=0).url


@pytest.mark.anyio
async def test_counts_made_before_the_endpoint_runs_are_served() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1)
    early = ep.probe("early")
    for _ in range(3):
        with early.time():
            pass
    async with streammetrics.serve(ep):
        body = await poll_counted(ep.url + "/metrics/json", "early")
    assert body["detailed_components"]["early"]["items_processed"] == 3  # type: ignore[index]


# -- extended by a subclass ----------------------------------------------------------------


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
        body = await poll(
            client,
            "/metrics/json",
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
        fams = families((await client.get("/metrics")).text)
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


# -- configured by a blueprint -------------------------------------------------------------


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
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05, span_timeout_s: 1.0}}
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
        # 1 s: long enough that the quick span's end (50 ms in) is folded before it
        # expires even on a busy machine, short enough to see the lost one expire.
        assert metrics.aggregator.span_timeout_s == 1.0
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
