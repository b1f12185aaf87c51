"""Bad input, everywhere: every malformed request gets a 4xx with a JSON error, nothing
already folded or stored changes, and label values survive the Prometheus text."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import httpx
import pytest
from litestar import Request, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.components.api import APIEndpoint
from streammetrics.components.store import Store
from streammetrics.harness import Harness
from streammetrics.http.app import create_app
from streammetrics.model.events import decode_events
from streammetrics.model.nesting import MAX_DEPTH
from streammetrics.model.types import MAX_NAME
from streammetrics.views.tick_cache import TickCache
from tests.support.harness import started
from tests.support.http_app import FakeClock, running, seed, service_for

pytestmark = pytest.mark.anyio

GET_ROUTES = ("/", "/health", "/metrics", "/metrics/json", "/alerts", "/components")
ERROR_FIELDS = {"error", "detail", "status_code"}


def assert_json_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.request.url, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert set(body) == ERROR_FIELDS
    assert body["status_code"] == status
    assert "Traceback" not in r.text
    return body


@pytest.fixture
def service() -> TickCache:
    clock = FakeClock()
    return service_for(seed(clock), clock, tick_s=0)  # a fresh snapshot per request


async def figures(c: httpx.AsyncClient) -> tuple[Any, ...]:
    body = (await c.get("/metrics/json")).json()
    return body["detailed_components"], body["rejected"], body["streaming"], body["traces"]


BAD_QUERIES = (
    "window=7x",
    "window=10",
    "window=",
    "window=%FF",  # not UTF-8 once decoded
    "window=" + "9" * 10_000,  # huge value
    "window=10s&window=60s",
    "windw=10s",
    "%FF%FE=1",
    "x=" + "y" * 10_000,
)


@pytest.mark.parametrize("route", GET_ROUTES)
async def test_bad_query_parameters_are_400_json_on_every_route(
    service: TickCache, route: str
) -> None:
    async with running(create_app(service)) as c:
        before = await figures(c)
        for query in BAD_QUERIES:
            if route not in ("/health", "/metrics/json", "/components") and "window" in query:
                query = query.replace("window", "page")  # routes without ?window= reject any
            body = assert_json_error(await c.get(f"{route}?{query}"), 400)
            assert body["error"] == "invalid query parameter"
            assert len(body["detail"]) < 400  # a huge value is not echoed whole
        assert await figures(c) == before


async def test_wrong_methods_are_405_json_with_allow(service: TickCache) -> None:
    async with running(create_app(service)) as c:
        before = await figures(c)
        for route in GET_ROUTES:
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = await c.request(method, route, content=b'{"component": "x"}')
                assert assert_json_error(r, 405)["error"] == "method not allowed"
                assert "GET" in r.headers["allow"]
        assert await figures(c) == before


async def test_oversized_bodies_are_413_json_before_they_are_read(
    service: TickCache,
) -> None:
    """The limit protects every body-reading route of the app (the event ingest too)."""
    read: list[int] = []

    @post("/echo-size")
    async def echo(request: Request[Any, Any, Any]) -> dict[str, int]:
        read.append(len(await request.body()))
        return {"bytes": read[-1]}

    app = create_app(service, extra_route_handlers=[echo], max_body_bytes=1000)
    async with running(app) as c:
        ok = await c.post("/echo-size", content=b"x" * 1000)
        big = await c.post("/echo-size", content=b"x" * 1001)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(100):
                yield b"y" * 100

        streamed = await c.post("/echo-size", content=chunks())
    assert ok.json() == {"bytes": 1000}
    for r in (big, streamed):
        assert assert_json_error(r, 413)["error"] == "request entity too large"
    assert read == [1000]


async def raw_request(port: int, data: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as s:
        await s.send(data)
        buf = b""
        with anyio.fail_after(5):
            while True:
                try:
                    buf += await s.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return buf


async def test_bytes_that_are_not_http_get_4xx_and_the_server_keeps_serving(
    service: TickCache,
) -> None:
    """Raw non-UTF-8 in the request line never reaches the app: the HTTP parser answers
    400 itself (plain text: that layer has no JSON). Non-ASCII header values do reach it
    and are harmless."""
    async with running(create_app(service)) as c:
        port = c.base_url.port
        assert port is not None
        for line in (b"GET /health?window=\xff HTTP/1.1", b"GET /\xff\xfe HTTP/1.1", b"GARBAGE"):
            r = await raw_request(port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert r.startswith(b"HTTP/1.1 400 "), r[:100]
        r = await raw_request(
            port,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: \xff\xfe\r\nConnection: close\r\n\r\n",
        )
        assert r.startswith(b"HTTP/1.1 200 ")
        assert (await c.get("/health")).status_code == 200


# -- the items ingest of an APIEndpoint --------------------------------------------------------

API = """
system:
  name: ingest
  components:
    - {name: api, type: APIEndpoint, config: {port: 0, max_body_bytes: 2048}}
    - {name: store, type: Store}
  bindings:
    - {from_component: api, to_component: store}
"""


@asynccontextmanager
async def api_system() -> AsyncIterator[tuple[httpx.AsyncClient, Harness]]:
    async with started(API, within=20) as harness:
        (where,) = harness.listening
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.port}") as c:
            yield c, harness


async def test_items_ingest_answers_every_bad_body_with_a_json_4xx() -> None:
    async with api_system() as (c, harness):
        store = harness.components["store"]
        api = harness.components["api"]
        assert isinstance(store, Store) and isinstance(api, APIEndpoint)
        assert (await c.post("/items", json={"n": 1})).status_code == 202
        bad = [
            ("/items", b'{"n": 1', 400, "malformed JSON"),
            ("/items", b"", 400, "malformed JSON"),
            ("/items", b'{"name": "\xff\xfe"}', 400, "malformed JSON"),  # not UTF-8
            ("/items", b"\x00\x01\x02\xff", 400, "malformed JSON"),
            ("/items", b'{"x": "' + b"a" * 3000 + b'"}', 413, "request entity too large"),
            ("/items/batch", b'{"n": 1}', 400, "not a batch"),
            ("/items/batch", b"[1, 2", 400, "malformed JSON"),
        ]
        for path, body, status, error in bad:
            r = await c.post(path, content=body, headers={"content-type": "application/json"})
            assert assert_json_error(r, status)["error"] == error, (path, body[:20])
        assert (await c.post("/items/batch", json=[{"n": 2}, {"n": 3}])).status_code == 202
        for _ in range(200):
            if store.statistics().rows == 3:
                break
            await anyio.sleep(0.01)
        stats = api.statistics()
    assert store.statistics().rows == 3  # the good items, all of them, and nothing else
    assert (stats.accepted, stats.rejected) == (3, len(bad))
    assert "invalid" not in str(stats)


def _no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert bad == [], [r.getMessage() for r in bad]


async def test_items_nested_deeper_than_max_depth_are_a_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any JSON value is an item, decoded untyped (one level of recursion per level of
    nesting): past ``MAX_DEPTH`` it is malformed, and the endpoint keeps taking items."""
    deep = b'{"n": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # 2 KiB: the limit of the API system
    at_limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    with caplog.at_level(logging.INFO):
        async with api_system() as (c, harness):
            api = harness.components["api"]
            assert isinstance(api, APIEndpoint)
            for path in ("/items", "/items/batch"):
                r = await c.post(path, content=deep, headers={"content-type": "application/json"})
                body = assert_json_error(r, 400)
                assert body["error"] == "malformed JSON"
                assert f"more than {MAX_DEPTH} levels deep" in body["detail"]
                assert (await c.get("/health")).status_code == 200
            assert (await c.post("/items", content=at_limit)).status_code == 202
            assert (await c.post("/items/batch", content=at_limit)).status_code == 202
            stats = api.statistics()
    assert (stats.accepted, stats.rejected) == (2, 2)
    _no_error_logged(caplog)


async def test_custom_route_bodies_nested_deeper_than_max_depth_are_a_400(
    service: TickCache, caplog: pytest.LogCaptureFixture
) -> None:
    """Litestar decodes a ``data`` parameter untyped before it converts it, so even a
    narrow type would recurse all the way down a deep body; the app's request class
    measures it first, in JSON and in MessagePack."""

    @post("/keys")
    async def keys(
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.JSON)],
    ) -> dict[str, int]:
        return {"keys": len(data)}

    @post("/count")
    async def count(
        data: Annotated[list[int], Body(media_type=RequestEncodingType.MESSAGEPACK)],
    ) -> dict[str, int]:
        return {"count": len(data)}

    json_type = {"content-type": "application/json"}
    msgpack_type = {"content-type": RequestEncodingType.MESSAGEPACK.value}
    with caplog.at_level(logging.INFO):
        async with running(create_app(service, extra_route_handlers=[keys, count])) as c:
            deep_json = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            r = await c.post("/keys", content=deep_json, headers=json_type)
            body = assert_json_error(r, 400)
            assert body["detail"] == f"the JSON body nests more than {MAX_DEPTH} levels deep"
            r = await c.post("/count", content=b"\x91" * 100_000 + b"\xc0", headers=msgpack_type)
            body = assert_json_error(r, 400)
            assert body["detail"] == f"the MessagePack body nests more than {MAX_DEPTH} levels deep"
            assert (await c.get("/health")).status_code == 200
            r = await c.post("/keys", content=b'{"a": [[1]], "b": 2}', headers=json_type)
            assert r.json() == {"keys": 2}
            r = await c.post("/count", content=b"\x93\x01\x02\x03", headers=msgpack_type)
            assert r.json() == {"count": 3}
    _no_error_logged(caplog)


# -- label values in the exposition -----------------------------------------------------------

NASTY = (
    'quote"inside',
    "back\\slash",
    "new\nline",
    'all\\"\n"\\',
    "ünïcødé ✓",
    "{brace}=,",
    "x" * MAX_NAME,
)


async def test_label_values_round_trip_through_the_prometheus_text() -> None:
    agg = Aggregator()
    assert (
        agg.fold_events([Event(name, "processed", count=i + 1) for i, name in enumerate(NASTY)])
        == []
    )
    service = TickCache(agg, tick_s=0)
    async with running(create_app(service)) as c:
        text = (await c.get("/metrics")).text
        om = (
            await c.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
        ).text
    for families in (parse_text(text), parse_openmetrics(om)):
        items = {
            s.labels["component"]: s.value
            for f in families
            if f.name == "component_items_processed"
            for s in f.samples
            if s.name.endswith("_total")
        }
        assert items == {name: i + 1 for i, name in enumerate(NASTY)}
    assert '"new\\nline"' in text  # escaped, never a raw line break inside a label
    promtool = shutil.which("promtool")
    if promtool is not None:
        check = await anyio.run_process(
            [promtool, "check", "metrics"], input=text.encode(), check=False
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_huge_labels_are_refused_at_the_decoder_with_the_path() -> None:
    body = b'[{"component": "ok", "kind": "processed"}, {"component": "' + b"y" * (MAX_NAME + 1)
    body += b'", "kind": "processed"}, {"component": "ok2", "kind": "processed", "stream": ""}]'
    decoded = decode_events(body)
    assert [e.component for e in decoded.events] == ["ok"]
    assert [(r.index, r.path) for r in decoded.rejected] == [
        (1, "events[1].component"),
        (2, "events[2].stream"),
    ]
    assert f"length <= {MAX_NAME}" in decoded.rejected[0].reason
