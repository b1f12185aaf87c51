"""The metrics API through a real uvicorn server on a loopback port."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest
import schemathesis
from litestar import get
from litestar.params import FromQuery
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler

import streammetrics
from streammetrics import (
    Event,
    MetricsEndpoint,
    MetricsPlugin,
)
from streammetrics.http.app import create_app
from streammetrics.http.routes import Service
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.snapshot import ProcessStats
from streammetrics.views.tick_cache import TickCache
from tests.support.alerts import HIGH, System, half_failing
from tests.support.http_app import (
    AGE,
    API_DONE,
    API_ERRORS,
    API_LATENCIES,
    PAY_DONE,
    STORE_DONE,
    BrokenSampler,
    FakeClock,
    FixedSampler,
    get_once,
    running,
    seed,
    service_for,
)

pytestmark = pytest.mark.anyio

FIGURE_ROUTES = ("/health", "/metrics", "/metrics/json", "/alerts", "/components")
WINDOW_ROUTES = ("/health", "/metrics/json", "/components")
COMPONENT_FIELDS = {
    "is_healthy",
    "items_processed",
    "errors_encountered",
    "status",
    "last_activity",
}
BREAKER_FIELDS = {"state", "failure_count", "last_failure"}


async def test_root_lists_the_endpoints(service: TickCache, clock: FakeClock) -> None:
    r = await get_once(service, "/")
    assert r.status_code == 200
    body = r.json()
    assert body["service"] == "System Metrics API"
    assert body["version"] == streammetrics.__version__
    assert set(body["endpoints"]) == {
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/json",
        "/alerts",
        "/components",
    }
    assert body["timestamp"] == clock.wall()


async def test_health_is_200_when_healthy(service: TickCache, clock: FakeClock) -> None:
    r = await get_once(service, "/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {
        "status",
        "health_score",
        "uptime_seconds",
        "components",
        "timestamp",
        "reasons",
    }
    assert body["status"] == "healthy"
    # Mean of the component scores: 1.0, 1.0 and 0.5 for the open breaker.
    assert body["health_score"] == round((1.0 + 1.0 + 0.5) / 3, 4)
    assert body["uptime_seconds"] == AGE
    assert body["components"] == {"total": 3, "healthy": 2, "running": 3}
    assert body["timestamp"] == clock.wall()
    assert body["reasons"] == [
        {"component": "payments", "reason": "circuit breaker open", "penalty": 0.5}
    ]


async def test_health_is_503_with_the_same_body_when_a_component_stops(
    service: TickCache, clock: FakeClock
) -> None:
    agg = service._aggregator
    assert agg is not None
    async with running(create_app(service)) as client:
        assert (await client.get("/health")).status_code == 200
        agg.fold_events([Event("task_store", "stopped")])
        clock.advance(1.0)  # past the tick: the next request sees a new snapshot
        r = await client.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"  # (1.0 + 0.0 + 0.5) / 3 = 0.5: degraded, not unhealthy
    assert body["health_score"] == 0.5
    assert body["components"] == {"total": 3, "healthy": 1, "running": 2}
    assert {"component": "task_store", "reason": "component stopped", "penalty": 1.0} in body[
        "reasons"
    ]


async def test_metrics_json_has_the_spec_fields_and_the_folded_figures(
    service: TickCache, clock: FakeClock
) -> None:
    r = await get_once(service, "/metrics/json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) >= {
        "health_score",
        "uptime_seconds",
        "system_status",
        "performance",
        "detailed_components",
        "circuit_breakers",
        "traces",
        "alerts",
        "recommendations",
        "streaming",
        "reasons",
        "rejected",
        "errors",
        "timestamp",
    }
    # The raw histograms are for Prometheus only.
    assert not {"total_histogram", "component_histograms", "latency_sums"} & set(body)
    assert body["system_status"] == "healthy"
    assert body["uptime_seconds"] == AGE

    perf = body["performance"]
    done = API_DONE + STORE_DONE + PAY_DONE
    assert perf["error_rate"] == pytest.approx(API_ERRORS / (done + API_ERRORS))
    assert perf["items_per_second"] == pytest.approx(done / AGE)
    assert perf["memory_usage_mb"] == 512.0
    assert perf["cpu_usage_percent"] == 25.5
    assert perf["window_seconds"] == 60

    api = body["detailed_components"]["task_api"]
    assert set(api) >= COMPONENT_FIELDS
    assert api["items_processed"] == API_DONE
    assert api["errors_encountered"] == API_ERRORS
    assert api["is_healthy"] is True
    assert api["status"] == "running"
    assert api["last_activity"] == clock.wall() - AGE
    assert api["error_rate"] == pytest.approx(API_ERRORS / (API_DONE + API_ERRORS))
    assert api["items_per_second"] == pytest.approx(API_DONE / AGE)
    assert api["latency"]["count"] == len(API_LATENCIES)
    assert api["last_error"] == "boom"
    assert body["detailed_components"]["task_store"]["items_processed"] == STORE_DONE
    assert body["detailed_components"]["payments"]["is_healthy"] is False

    pay = body["circuit_breakers"]["payments"]
    assert set(pay) >= BREAKER_FIELDS
    assert pay["state"] == "open"
    assert pay["failure_count"] == 1
    assert pay["last_failure"] == clock.wall() - AGE
    # Only components with a breaker are listed: task_api and task_store have none.
    assert set(body["circuit_breakers"]) == {"payments"}
    assert body["traces"]["total_traces"] == 1
    assert body["traces"]["active_spans"] == 1
    assert body["rejected"] == {"malformed": 3}
    assert body["errors"] == []
    assert body["alerts"] == [] and body["recommendations"] == []


async def test_window_query_selects_the_view(service: TickCache) -> None:
    async with running(create_app(service)) as client:
        r10 = await client.get("/metrics/json", params={"window": "10s"})
        r300 = await client.get("/components", params={"window": "300s"})
        h10 = await client.get("/health", params={"window": "10s"})
    assert r10.status_code == r300.status_code == h10.status_code == 200
    # Everything happened AGE = 20 s ago: outside the 10 s view, inside the 300 s one.
    perf = r10.json()["performance"]
    assert perf["window_seconds"] == 10
    assert perf["items_per_second"] == 0.0
    assert r10.json()["detailed_components"]["task_api"]["items_per_second"] == 0.0
    api = r300.json()["components"]["task_api"]
    assert api["windows"]["300s"]["processed"] == API_DONE
    assert api["items_per_second"] == pytest.approx(API_DONE / AGE)


async def test_alerts_route(service: TickCache, clock: FakeClock) -> None:
    r = await get_once(service, "/alerts")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"alerts", "recommendations", "timestamp"}
    assert body["timestamp"] == clock.wall()


async def test_components_route(service: TickCache, clock: FakeClock) -> None:
    r = await get_once(service, "/components")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"components", "circuit_breakers", "streaming", "timestamp"}
    assert set(body["components"]) == {"task_api", "task_store", "payments"}
    for status in body["components"].values():
        assert set(status) >= COMPONENT_FIELDS
    assert body["components"]["task_api"]["items_processed"] == API_DONE
    assert set(body["circuit_breakers"]["payments"]) >= BREAKER_FIELDS
    streaming = body["streaming"]
    assert set(streaming) >= {"active_streams", "total_messages", "message_rate", "streams"}
    assert streaming["total_messages"] == API_DONE  # the processed event on stream "input"
    assert streaming["message_rate"] == pytest.approx(API_DONE / AGE)
    assert streaming["active_streams"] == 2  # "input" carried messages; the binding has a buffer
    binding = streaming["streams"]["task_api->task_store"]
    assert (binding["buffer_used"], binding["buffer_size"]) == (3, 100)
    assert streaming["streams"]["input"]["total_messages"] == API_DONE


@pytest.mark.parametrize("route", WINDOW_ROUTES)
async def test_bad_query_is_400_json_naming_the_parameter(service: TickCache, route: str) -> None:
    async with running(create_app(service)) as client:
        bad = await client.get(route, params={"window": "7x"})
        unknown = await client.get(route, params={"windw": "10s"})
        twice = await client.get(f"{route}?window=10s&window=60s")
    for r in (bad, unknown, twice):
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "invalid query parameter"
    assert "'window'" in bad.json()["detail"]
    assert "10s, 60s, 300s" in bad.json()["detail"]
    assert "'7x'" in bad.json()["detail"]
    assert "'windw'" in unknown.json()["detail"] and "window" in unknown.json()["detail"]
    assert "more than once" in twice.json()["detail"]


async def test_unavailable_harness_is_503_json_and_the_server_keeps_running(
    service: TickCache,
) -> None:
    async with running(create_app(service)) as client:
        service.set_unavailable("harness stopped")
        for route in FIGURE_ROUTES:
            r = await client.get(route)
            assert r.status_code == 503, route
            assert r.json() == {
                "error": "harness unavailable",
                "detail": "harness stopped",
                "status_code": 503,
            }
        assert (await client.get("/")).status_code == 200
        service.set_available()
        assert (await client.get("/metrics/json")).status_code == 200


async def test_no_aggregator_is_503(clock: FakeClock) -> None:
    async with running(create_app(service_for(None, clock))) as client:
        r = await client.get("/health")
    assert r.status_code == 503
    assert r.json()["error"] == "harness unavailable"
    assert "system_metrics" in r.json()["detail"]


async def test_failing_sampler_still_answers_with_the_error_listed(clock: FakeClock) -> None:
    service = service_for(seed(clock), clock, sampler=BrokenSampler())
    async with running(create_app(service)) as client:
        r = await client.get("/metrics/json")
        prom = await client.get("/metrics")
    assert r.status_code == 200
    body = r.json()
    assert body["errors"] == ["process sampler failed: OSError: no /proc here"]
    assert body["performance"]["memory_usage_mb"] is None
    assert body["detailed_components"]["task_api"]["items_processed"] == API_DONE
    assert prom.status_code == 200
    assert "streammetrics_collection_errors 1.0" in prom.text
    assert service.statistics().sampler_failures == 1


async def test_unhandled_error_is_500_json_without_traceback(service: TickCache) -> None:
    @get("/custom-metrics")
    async def custom(service: Service) -> dict[str, int]:
        raise RuntimeError("secret internals /etc/passwd")

    async with running(create_app(service, extra_route_handlers=[custom])) as client:
        r = await client.get("/custom-metrics")
        missing = await client.get("/no-such-route")
        after = await client.get("/health")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "internal error", "detail": "RuntimeError", "status_code": 500}
    assert "secret" not in r.text and "Traceback" not in r.text
    assert missing.status_code == 404 and missing.json()["error"] == "not found"
    assert after.status_code == 200


async def test_validation_of_custom_routes_uses_the_same_error_shape(
    service: TickCache,
) -> None:
    @get("/custom-count")
    async def custom(n: FromQuery[int]) -> dict[str, int]:
        return {"n": n}

    async with running(create_app(service, extra_route_handlers=[custom])) as client:
        ok = await client.get("/custom-count", params={"n": "3"})
        bad = await client.get("/custom-count", params={"n": "three"})
    assert ok.json() == {"n": 3}
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid query parameter"
    assert "'n'" in bad.json()["detail"]


async def test_openapi_schema_documents_the_routes(service: TickCache) -> None:
    async with running(create_app(service, title="Prod Metrics")) as client:
        r = await client.get("/schema/openapi.json")
        root = await client.get("/")
    assert r.status_code == 200
    schema = r.json()
    assert schema["info"]["title"] == "Prod Metrics"
    assert root.json()["service"] == "Prod Metrics"
    assert {"/", *FIGURE_ROUTES} <= set(schema["paths"])
    (param,) = schema["paths"]["/metrics/json"]["get"]["parameters"]
    assert param["name"] == "window" and param["in"] == "query"
    assert {"10s", "60s", "300s"} <= set(param["schema"]["enum"])
    assert "400" in schema["paths"]["/health"]["get"]["responses"]


# -- health probes, HEAD, the OpenAPI document -----------------------------------------------


async def test_liveness_and_readiness_probes(service: TickCache, clock: FakeClock) -> None:
    agg = service._aggregator
    assert agg is not None
    async with running(create_app(service)) as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
        assert (live.status_code, live.json()) == (200, {"status": "alive"})
        assert (ready.status_code, ready.json()) == (200, {"status": "healthy"})
        assert ready.headers["content-type"] == "application/json"
        agg.fold_events([Event("task_store", "stopped")])
        clock.advance(1.0)  # past the tick
        assert (await client.get("/health")).status_code == 503
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"status": "degraded"})
        assert (await client.get("/health/live")).status_code == 200  # alive, if not ready
        service.set_unavailable("harness stopped")
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {
            "error": "harness unavailable",
            "detail": "harness stopped",
            "status_code": 503,
        }
        live = await client.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "alive"})
        bad = await client.get("/health/live", params={"verbose": "1"})
        assert bad.status_code == 400 and "'verbose'" in bad.json()["detail"]


async def test_health_answers_are_made_once_per_snapshot_and_never_share_headers(
    service: TickCache, clock: FakeClock
) -> None:
    """The health routes send an answer encoded once per snapshot: the same bytes while
    the snapshot stands, the next one's after the tick. What a layer adds to one answer
    (CORS for a browser's request) is not in the next, and the security headers are
    there once each time."""
    from litestar.config.cors import CORSConfig

    agg = service._aggregator
    assert agg is not None
    cors = CORSConfig(allow_origins=["https://ops.example"])
    async with running(create_app(service, cors=cors)) as client:
        first = await client.get("/health", headers={"Origin": "https://ops.example"})
        again = await client.get("/health")
        ready = [await client.get("/health/ready") for _ in range(2)]
        assert first.status_code == again.status_code == 200
        assert first.content == again.content
        assert first.headers["access-control-allow-origin"] == "https://ops.example"
        for r in (again, *ready):
            assert "access-control-allow-origin" not in r.headers
        for r in (first, again, *ready):
            names = [name.lower() for name, _ in r.headers.multi_items()]
            assert names.count("x-content-type-options") == 1
            assert names.count("content-length") == 1
        assert [r.json() for r in ready] == [{"status": "healthy"}] * 2
        clock.advance(1.0)  # past the tick: a new snapshot, a new answer
        later = await client.get("/health")
        assert later.json()["timestamp"] == first.json()["timestamp"] + 1.0
        agg.fold_events([Event("task_store", "stopped")])
        clock.advance(1.0)
        degraded = await client.get("/health")
        assert (degraded.status_code, degraded.json()["status"]) == (503, "degraded")
        ready_now = await client.get("/health/ready")
        assert (ready_now.status_code, ready_now.json()) == (503, {"status": "degraded"})
        h10 = await client.get("/health", params={"window": "10s"})
        assert h10.status_code == 503  # its own snapshot (view), its own answer


async def test_head_on_get_routes_answers_the_same_status_without_a_body(
    service: TickCache, clock: FakeClock
) -> None:
    agg = service._aggregator
    assert agg is not None
    async with running(create_app(service)) as client:
        ok = await client.head("/health")
        assert (ok.status_code, ok.content) == (200, b"")
        assert ok.headers["content-type"] == "application/json"
        agg.fold_events([Event("task_store", "stopped")])
        clock.advance(1.0)
        for path in ("/health", "/health/ready"):
            r = await client.head(path)
            assert (r.status_code, r.content) == (503, b""), path
        service.set_unavailable("harness stopped")
        for path in ("/metrics", "/metrics/json", "/health"):
            r = await client.head(path)
            assert (r.status_code, r.content) == (503, b""), path
        assert (await client.head("/health/live")).status_code == 200
        assert (await client.head("/nowhere")).status_code == 404
        bad = await client.head("/health", params={"windw": "10s"})
        assert (bad.status_code, bad.content) == (400, b"")  # the GET's query check


class _PluginRoute(MetricsPlugin):
    name = "plugin"

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        @get("/plugin-route", summary="A plugin's route")
        async def plugin_route(service: Service) -> dict[str, str]:
            return {"endpoint": service.name}

        return [plugin_route]


class _AddedLater(MetricsEndpoint):
    def _setup_routes(self) -> None:
        super()._setup_routes()

        @self.app.get("/added-later")
        async def added_later() -> dict[str, str]:
            return {"added": "later"}


#: Headers that frame the body: HEAD has no body to frame.
_FRAMING = {"date", "content-length", "transfer-encoding"}


async def test_every_get_route_answers_head_like_get() -> None:
    """Every GET route of a full endpoint (built-ins, dashboard, stream, schema, a
    plugin's route, one added with ``app.get``): same status and headers, no body."""
    ep = _AddedLater(name="m", port=0, tick_s=60, plugins=[_PluginRoute()])
    ep.service.wall = lambda: 1_700_000_000.0  # GET / shows the wall clock: hold it
    paths = sorted(
        re.sub(r"\{[^}]+\}", "nope", route.path)
        for route in ep.app.routes
        if isinstance(route, HTTPRoute) and "GET" in route.methods
    )
    assert {
        "/",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/json",
        "/alerts",
        "/components",
        "/dashboard",
        "/stream",
        "/schema",
        "/schema/openapi.json",
        "/plugin-route",
        "/added-later",
    } <= set(paths)
    with anyio.fail_after(30):
        async with (
            streammetrics.serve(ep),
            httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
        ):
            for path in paths:
                if path == "/stream":
                    async with client.stream("GET", path) as got:
                        g_status, g_headers, g_body = got.status_code, got.headers, None
                else:
                    got = await client.get(path)
                    g_status, g_headers, g_body = got.status_code, got.headers, got.content
                head = await client.head(path)
                assert head.status_code == g_status, path
                assert head.content == b"", path
                same = {k: v for k, v in head.headers.items() if k not in _FRAMING}
                assert same == {k: v for k, v in g_headers.items() if k not in _FRAMING}, path
                if "content-length" in head.headers:
                    assert g_body is not None, path
                    assert int(head.headers["content-length"]) == len(g_body), path
            # HEAD /stream ended at once; its stream slot is free again
            while ep.service.live.statistics().clients:  # noqa: ASYNC110 - a counter
                await anyio.sleep(0.01)
            # HEAD is not added where there is no GET
            events = await client.head("/events")
            assert events.status_code == 405
            assert "HEAD" not in events.headers["allow"]
            assert "HEAD" in (await client.post("/metrics")).headers["allow"]


async def test_openapi_is_served_as_json_only_and_is_valid(service: TickCache) -> None:
    pages = ("/schema/swagger", "/schema/redoc", "/schema/elements", "/schema/rapidoc")
    async with running(create_app(service)) as client:
        doc = await client.get("/schema/openapi.json")
        at_root = await client.get("/schema")
        others = [await client.get(p) for p in (*pages, "/schema/scalar")]
    assert doc.status_code == at_root.status_code == 200
    assert doc.headers["content-type"] == "application/vnd.oai.openapi+json"
    assert at_root.headers["content-type"] == doc.headers["content-type"]
    assert at_root.json() == doc.json()
    # No documentation page at all, so none that loads its script from elsewhere.
    for r in others:
        assert r.status_code == 404, r.request.url
        assert not re.search(r"https?://|\bsrc\s*=|\bhref\s*=", r.text), r.request.url
        assert r.json()["error"] == "not found"  # the API's JSON 404, not an HTML page
        assert "/schema/openapi.json" in r.json()["detail"]
    schema = doc.json()
    schemathesis.openapi.from_dict(schema).validate()  # against the OpenAPI meta-schema
    assert schema["openapi"].startswith("3.1")
    assert {"/", "/health/live", "/health/ready", *FIGURE_ROUTES} <= set(schema["paths"])
    assert set(schema["paths"]["/health/ready"]["get"]["responses"]) >= {"200", "503"}
    # HEAD is answered, not documented twice: every operation is the GET.
    assert all(set(ops) == {"get"} for ops in schema["paths"].values())


# -- /alerts: the lifecycle over HTTP ---------------------------------------------------------


@asynccontextmanager
async def served(s: System) -> AsyncIterator[httpx.AsyncClient]:
    service = TickCache(
        s.agg,
        tick_s=1.0,
        sampler=FixedSampler(ProcessStats(100.0, 5.0)),
        clock=s.clock.monotonic,
        wall=s.clock.wall,
        judge=s.judge,
    )
    async with running(create_app(service)) as client:
        yield client


@pytest.mark.anyio
async def test_alerts_route_shows_the_lifecycle_in_the_specification_shape() -> None:
    s = System([HIGH, AlertRule("Down", "up == 0", level="warning")], builtin=False)
    s.agg.register_stream(
        "a->b:input", from_component="a", to_component="b", buffer=lambda: (95, 100)
    )
    half_failing(s)
    s.fold(Event("w", "stopped"))
    t0 = s.wall
    async with served(s) as client:
        body = (await client.get("/alerts")).json()
        assert set(body) == {
            "alerts",
            "recommendations",
            "timestamp",
            "pending_alerts",
            "resolved_alerts",
        }
        assert body["timestamp"] == t0
        assert body["alerts"] == [
            {
                "level": "warning",
                "message": "Down: up == 0",
                "component": "w",
                "timestamp": t0,
                "name": "Down",
                "state": "firing",
                "since": t0,
                "value": 0.0,
                "resolved_at": None,
            }
        ]
        (p,) = body["pending_alerts"]
        assert (p["name"], p["state"], p["since"], p["value"]) == ("HighErr", "pending", t0, 0.5)
        for _ in range(4):  # two minutes, errors kept in the window
            s.clock.advance(30)
            half_failing(s)
            await client.get("/alerts")
        body = (await client.get("/alerts")).json()
        high = [a for a in body["alerts"] if a["name"] == "HighErr"]
        assert high == [
            {
                "level": "critical",
                "message": "db fails 50%",
                "component": "db",
                "timestamp": t0 + 120,
                "name": "HighErr",
                "state": "firing",
                "since": t0,
                "value": 0.5,
                "resolved_at": None,
            }
        ]
        rec = body["recommendations"][0]
        assert rec == {
            "type": "capacity",
            "message": rec["message"],
            "component": "a->b:input",
            "figure": "buffer_ratio",
            "value": 0.95,
        }
        # the critical alert shows on /health too: 503, and the reason
        health = await client.get("/health")
        assert health.status_code == 503
        reasons = health.json()["reasons"]
        assert {
            "component": "db",
            "reason": "critical alert HighErr firing: db fails 50%",
            "penalty": 0.0,
        } in reasons
        # /metrics/json carries the firing alerts as well
        js = (await client.get("/metrics/json")).json()
        assert {a["name"] for a in js["alerts"]} == {"HighErr", "Down"}
        s.fold(Event("db", "processed", count=1000), Event("w", "started"))
        s.clock.advance(1)
        body = (await client.get("/alerts")).json()
        assert body["alerts"] == []
        assert {(a["name"], a["resolved_at"]) for a in body["resolved_alerts"]} == {
            ("HighErr", t0 + 121),
            ("Down", t0 + 121),
        }
