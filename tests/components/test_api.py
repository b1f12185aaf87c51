"""The APIEndpoint, run for real: items in over HTTP on a loopback port reach a Store, 503 while
downstream is stuck, a busy port stops the start, and what a client got wrong (a 4xx)
counts apart from the endpoint's own failures."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.components.api import APIEndpoint
from streammetrics.components.store import Store
from streammetrics.errors import PortInUseError
from streammetrics.harness import Harness
from tests.support.harness import rows, running, serving, snapshot
from tests.support.waiting import poll, until

pytestmark = pytest.mark.anyio


async def test_api_endpoint_items_reach_a_store(tmp_path: Path) -> None:
    db = tmp_path / "api.db"
    bp = f"""
system:
  name: api
  components:
    - {{name: app_server, type: FastAPIEndpoint, config: {{port: 0, max_body_bytes: 1000}}}}
    - {{name: data_store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: app_server, to_component: data_store, stream_name: input}}
"""
    async with running(bp) as (harness, agg):
        (where,) = harness.listening
        assert (where.component, where.host) == ("app_server", "127.0.0.1")
        assert where.port > 0
        api = harness.components["app_server"]
        assert isinstance(api, APIEndpoint)
        store = harness.components["data_store"]
        assert isinstance(store, Store)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.port}") as client:
            r = await client.get("/health")
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            r = await client.post("/items", json={"route": "orders", "n": 1})
            assert (r.status_code, r.json()) == (202, {"accepted": 1})
            r = await client.post("/items", json=[1, 2])  # an array is one item here
            assert (r.status_code, r.json()) == (202, {"accepted": 1})
            r = await client.post("/items/batch", json=[{"n": 2}, "three", 4, None])
            assert (r.status_code, r.json()) == (202, {"accepted": 4})
            r = await client.post("/items", content=b'{"n": ')
            assert r.status_code == 400
            assert r.json()["error"] == "malformed JSON"
            r = await client.post("/items/batch", json={"not": "a list"})
            assert r.status_code == 400
            r = await client.post("/items", content=b"[" + b"1," * 600 + b"1]")
            assert r.status_code == 413
            await until(lambda: store.statistics().rows == 6)
        assert api.statistics().accepted == 6
        assert api.statistics().rejected == 3
        snap = snapshot(harness, agg)
    assert rows(db) == [{"route": "orders", "n": 1}, [1, 2], {"n": 2}, "three", 4, None]
    app = snap.detailed_components["app_server"]
    assert app.items_processed == 6
    # the three refusals were the client's fault (400, 400, 413): client errors, not its own
    assert (app.errors_encountered, app.client_errors) == (0, 3)
    assert app.last_error is None
    assert snap.streaming.streams["app_server->data_store:input"].total_messages == 6


async def test_api_endpoint_answers_503_when_downstream_is_stuck() -> None:
    bp = """
system:
  name: api
  components:
    - {name: api, type: APIEndpoint, config: {port: 0, send_timeout_s: 0.1}}
    - {name: slow, type: StreamProcessor, config: {work_ms: 10000}}
  bindings:
    - {from_component: api, to_component: slow, buffer: 1}
"""
    async with running(bp) as (harness, _agg):
        port = harness.listening[0].port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post("/items/batch", json=[1, 2, 3, 4])
        assert r.status_code == 503
        assert r.json()["detail"].startswith("accepted 2 of 4 items")


async def test_api_endpoint_on_a_busy_port_stops_the_start() -> None:
    async with running(
        "system: {name: a, components: [{name: one, type: APIEndpoint, config: {port: 0}}]}"
    ) as (first, _agg):
        port = first.listening[0].port
        bp = (
            "system: {name: b, components: "
            f"[{{name: two, type: APIEndpoint, config: {{port: {port}}}}}]}}"
        )
        second = Harness(parse_blueprint(bp))
        with pytest.raises(BaseExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                await tg.start(second.run)
        assert info.group_contains(PortInUseError)


def _served_with_metrics(api_config: str, downstream: str) -> str:
    return f"""
system:
  name: api
  components:
    - {{name: api, type: APIEndpoint, config: {api_config}}}
    - {{name: down, {downstream}}}
    - {{name: metrics, type: MetricsEndpoint, config: {{port: 0, tick_s: 0.05}}}}
  bindings:
    - {{from_component: api, to_component: down, buffer: 1}}
"""


async def test_client_errors_are_counted_apart_and_do_not_lower_health(tmp_path: Path) -> None:
    bp = _served_with_metrics(
        "{port: 0, max_body_bytes: 100}", f'type: Store, config: {{path: "{tmp_path / "s.db"}"}}'
    )
    async with serving(bp) as (harness, api, metrics):
        assert (await api.post("/items", json={"n": 1})).status_code == 202
        assert (await api.post("/items", content=b'{"n": ')).status_code == 400
        assert (await api.post("/items/batch", json={"not": "a list"})).status_code == 400
        assert (await api.post("/items", content=b"1" * 200)).status_code == 413
        assert (await api.get("/no-such-route")).status_code == 404
        body = await poll(
            metrics,
            "/metrics/json",
            lambda b: b["detailed_components"]["api"]["client_errors"] == 4,
        )
        st = body["detailed_components"]["api"]
        assert (st["items_processed"], st["errors_encountered"]) == (1, 0)
        assert st["error_rate"] == 0.0 and st["health"] == 1.0 and st["is_healthy"]
        assert st["last_error"] is None
        component = harness.components["api"]
        assert isinstance(component, APIEndpoint)
        assert component.statistics().client_errors == 4
        text = (await metrics.get("/metrics")).text
        assert 'component_client_errors_total{component="api"} 4.0' in text
        assert 'component_errors_total{component="api"} 0.0' in text


async def test_server_errors_still_count_as_errors_and_lower_health() -> None:
    bp = _served_with_metrics(
        "{port: 0, send_timeout_s: 0.1}", "type: StreamProcessor, config: {work_ms: 10000}"
    )
    async with serving(bp) as (_harness, api, metrics):
        r = await api.post("/items/batch", json=[1, 2, 3, 4])
        assert r.status_code == 503  # downstream took 2, then stalled: 2 items failed
        body = await poll(
            metrics,
            "/metrics/json",
            lambda b: b["detailed_components"]["api"]["errors_encountered"] == 2,
        )
        st = body["detailed_components"]["api"]
        assert st["client_errors"] == 0
        assert st["error_rate"] == 0.5
        assert st["health"] < 1.0 and not st["is_healthy"]
        assert "503 downstream busy" in st["last_error"]
