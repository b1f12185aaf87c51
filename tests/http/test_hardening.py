"""CORS in front of the other guards: no origin allowed unless configured, GET and the
preflight from listed origins only, and a preflight that auth lets through."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from streammetrics.http.settings import AuthSettings, CorsSettings
from tests.support.guards import ORIGIN, TOKEN, bearer, served
from tests.support.http_app import FakeClock

pytestmark = pytest.mark.anyio


async def test_without_cors_config_no_origin_is_allowed(clock: FakeClock) -> None:
    async with served(clock) as c:
        r = await c.get("/metrics/json", headers={"Origin": ORIGIN})
        pre = await c.options(
            "/metrics/json",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in pre.headers


async def test_cors_allows_get_from_listed_origins_only(clock: FakeClock) -> None:
    async with served(clock, cors=CorsSettings([ORIGIN])) as c:
        ok = await c.get("/metrics/json", headers={"Origin": ORIGIN})
        other = await c.get("/metrics/json", headers={"Origin": "https://evil.example"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in ok.headers["vary"]
    assert "access-control-allow-origin" not in other.headers


async def test_cors_preflight(clock: FakeClock) -> None:
    cors = CorsSettings(["https://*.example.org", ORIGIN], max_age=120)
    async with served(clock, cors=cors) as c:

        async def preflight(origin: str, method: str, headers: str = "") -> httpx.Response:
            h = {"Origin": origin, "Access-Control-Request-Method": method}
            if headers:
                h["Access-Control-Request-Headers"] = headers
            return await c.options("/components", headers=h)

        ok = await preflight(ORIGIN, "GET")
        wildcard = await preflight("https://grafana.example.org", "GET")
        post = await preflight(ORIGIN, "POST")
        stranger = await preflight("https://evil.example", "GET")
        header = await preflight(ORIGIN, "GET", "x-custom")
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert ok.headers["access-control-allow-methods"] == "GET"
    assert ok.headers["access-control-max-age"] == "120"
    assert wildcard.status_code == 204
    assert wildcard.headers["access-control-allow-origin"] == "https://grafana.example.org"
    for refused in (post, stranger, header):
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


async def test_cors_with_auth_lets_the_preflight_through_and_allows_authorization(
    clock: FakeClock, tokens_env: str
) -> None:
    cors = CorsSettings([ORIGIN])
    async with served(clock, cors=cors, auth=AuthSettings(tokens_env)) as c:
        pre = await c.options(
            "/metrics/json",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        denied = await c.get("/metrics/json", headers={"Origin": ORIGIN})
        allowed = await c.get("/metrics/json", headers={"Origin": ORIGIN, **bearer(TOKEN)})
    assert pre.status_code == 204  # browsers send no credentials with a preflight
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    # the page can read why it was refused
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == ORIGIN
    assert "WWW-Authenticate" in denied.headers["access-control-expose-headers"]
    assert allowed.status_code == 200


def test_cors_refuses_credentials_with_any_origin() -> None:
    with pytest.raises(msgspec.ValidationError, match="allow_credentials"):
        msgspec.convert({"allow_origins": ["*"], "allow_credentials": True}, CorsSettings)
