"""The response headers every answer carries (OWASP's REST security guidance) and the
Cache-Control each route sends, as README states it."""

from __future__ import annotations

import re

import httpx
import pytest

import streammetrics
from streammetrics import MetricsEndpoint
from streammetrics.http.app import create_app
from streammetrics.http.headers import SECURITY_HEADERS
from streammetrics.http.settings import RateLimitSettings
from tests.support.guards import served
from tests.support.http_app import FakeClock, running, seed, service_for
from tests.support.paths import ROOT

pytestmark = pytest.mark.anyio


async def test_every_response_carries_the_security_headers(clock: FakeClock) -> None:
    service = service_for(seed(clock), clock)
    async with running(create_app(service)) as c:
        answers = [
            await c.get("/"),
            await c.get("/metrics"),
            await c.get("/health?window=7x"),  # 400
            await c.get("/nowhere"),  # 404 from the router, before any route
            await c.post("/metrics"),  # 405
        ]
        service.set_unavailable("stopped for the test")
        answers.append(await c.get("/metrics/json"))  # 503
    assert [r.status_code for r in answers] == [200, 200, 400, 404, 405, 503]
    for r in answers:
        for name, value in SECURITY_HEADERS:
            assert r.headers[name] == value, (r.request.url, name)
        assert "server" not in r.headers


README = ROOT / "README.md"


def readme_cache_control() -> tuple[str, dict[tuple[str, str, int], str]]:
    """README's Cache-Control table: the default, and ``(method, path, status) -> value``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "| response | `Cache-Control` |" in line)
    default: str | None = None
    specific: dict[tuple[str, str, int], str] = {}
    for line in lines[start + 2 :]:
        if not line.strip().startswith("|"):
            break
        m = re.fullmatch(r"\s*\| `(\w+) (/\S*)` (\d{3})[^|]*\| `([^`]+)` \|\s*", line)
        if m:
            specific[(m[1], m[2], int(m[3]))] = m[4]
            continue
        m = re.fullmatch(r"\s*\| every response[^|]*\| `([^`]+)` \|\s*", line)
        assert m, f"README's Cache-Control table has a row this test cannot read: {line!r}"
        default = m[1]
    assert default is not None and specific, "README's Cache-Control table is incomplete"
    return default, specific


async def test_every_route_sends_the_cache_control_readme_states() -> None:
    default, specific = readme_cache_control()
    seen: list[tuple[str, str, int, str]] = []

    def check(method: str, path: str, r: httpx.Response) -> None:
        # HEAD answers with the GET's headers, as README says too
        key = ("GET" if method == "HEAD" else method, path, r.status_code)
        seen.append((method, path, r.status_code, r.headers["cache-control"]))
        assert r.headers["cache-control"] == specific.get(key, default), (method, path, r)

    ep = MetricsEndpoint(name="m", port=0)
    refusing = MetricsEndpoint(name="full", port=0, dashboard={"max_clients": 0})
    event = {"component": "a", "kind": "processed"}
    async with (
        streammetrics.serve(ep),
        streammetrics.serve(refusing),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as c,
    ):
        for route in ep.app.routes:
            path = re.sub(r"\{[^}]+\}", "nope", route.path)
            for method in sorted(set(getattr(route, "methods", ())) - {"OPTIONS"}):
                if (method, path) == ("GET", "/stream"):
                    async with c.stream("GET", path) as r:
                        check(method, path, r)
                elif method == "POST":
                    check(method, path, await c.post(path, json=event))
                else:
                    check(method, path, await c.request(method, path))
        check("GET", "/nowhere", await c.get("/nowhere"))  # 404
        check("POST", "/metrics", await c.post("/metrics"))  # 405
        check("GET", "/health", await c.get("/health?windw=1"))  # 400
        check("POST", "/events", await c.post("/events", content=b"{}"))  # 415
        check("GET", "/stream", await c.get(refusing.url + "/stream"))  # 503, not the stream
    clock = FakeClock()
    async with served(clock, rate_limit=RateLimitSettings(requests=1)) as limited:
        await limited.get("/alerts")
        check("GET", "/alerts", await limited.get("/alerts"))  # 429
    statuses = {status for _m, _p, status, _v in seen}
    assert {200, 400, 404, 405, 415, 429, 503} <= statuses
    # each of README's own rows was met
    assert all(key in {(m, p, s) for m, p, s, _v in seen} for key in specific)
