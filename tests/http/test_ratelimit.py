"""CORS, rate limits, bearer auth and response headers, through a real server."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import Event, MetricsEndpoint
from streammetrics.blueprint import parse_blueprint
from streammetrics.errors import BlueprintError, ConfigError
from streammetrics.http.app import create_app
from streammetrics.http.auth import BearerTokens
from streammetrics.http.hardening import hardening
from streammetrics.http.headers import SECURITY_HEADERS
from streammetrics.http.ratelimit import TokenBucketLimiter
from streammetrics.http.settings import AuthSettings, CorsSettings, RateLimitSettings
from streammetrics.model.types import parse_duration
from tests.support.http_app import FakeClock, running, seed, service_for
from tests.support.paths import ROOT

pytestmark = pytest.mark.anyio

ORIGIN = "https://dash.example"
TOKEN = "tok-Aa0123456789-first"
TOKEN2 = "tok-Bb9876543210-second"
ENV = "STREAMMETRICS_TEST_TOKENS"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens_env() -> Iterator[str]:
    os.environ[ENV] = f"{TOKEN}, {TOKEN2}"
    try:
        yield ENV
    finally:
        del os.environ[ENV]


@asynccontextmanager
async def served(
    clock: FakeClock,
    *,
    cors: CorsSettings | None = None,
    rate_limit: RateLimitSettings | None = None,
    auth: AuthSettings | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        service_for(seed(clock), clock),
        **hardening(
            cors=cors, rate_limit=rate_limit, auth=auth, component="m", clock=clock.monotonic
        ),
    )
    async with running(app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- response headers ---------------------------------------------------------------------


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


# -- CORS -----------------------------------------------------------------------------------


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


# -- rate limits ---------------------------------------------------------------------------


async def test_429_with_retry_after_and_a_json_body(clock: FakeClock) -> None:
    async with served(clock, rate_limit=RateLimitSettings(requests=3, per="1s")) as c:
        codes = [(await c.get("/metrics/json")).status_code for _ in range(3)]
        refused = await c.get("/components")
        clock.advance(1 / 3)  # one token back
        again = await c.get("/alerts")
        refused_again = await c.get("/alerts")
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit-policy"] == "3;w=1"
    body = refused.json()
    assert body["error"] == "too many requests"
    assert body["status_code"] == 429
    assert "3 requests per 1s" in body["detail"]
    assert again.status_code == 200
    assert refused_again.status_code == 429


async def test_retry_after_is_when_the_next_token_comes_rounded_up(clock: FakeClock) -> None:
    async with served(clock, rate_limit=RateLimitSettings(requests=2, per="1m")) as c:
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/")).status_code == 200
        clock.advance(5.0)
        r = await c.get("/")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "25"  # a token every 30 s; 5 s have passed


async def test_health_has_its_own_higher_limit(clock: FakeClock) -> None:
    async with served(clock, rate_limit=RateLimitSettings(requests=2)) as c:
        scrapes = [(await c.get("/metrics")).status_code for _ in range(3)]
        health = [(await c.get("/health")).status_code for _ in range(20)]
        over = await c.get("/health")
    assert scrapes == [200, 200, 429]
    assert health == [200] * 20  # default: ten times the general limit
    assert over.status_code == 429


async def test_health_limit_is_configurable(clock: FakeClock) -> None:
    limit = RateLimitSettings(requests=100, health_requests=2, per=0.5)
    async with served(clock, rate_limit=limit) as c:
        codes = [(await c.get("/health")).status_code for _ in range(3)]
        clock.advance(0.25)  # half a period: one token
        after = (await c.get("/health")).status_code
    assert codes == [200, 200, 429]
    assert after == 200


async def test_limits_are_per_client_address(clock: FakeClock) -> None:
    limit = RateLimitSettings(requests=1, per="10s")
    async with served(clock, rate_limit=limit) as first:
        assert (await first.get("/")).status_code == 200
        assert (await first.get("/")).status_code == 429
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=first.base_url, transport=transport) as second:
            assert (await second.get("/")).status_code == 200
            assert (await second.get("/")).status_code == 429


async def test_failed_logins_are_rate_limited_too(clock: FakeClock, tokens_env: str) -> None:
    limit = RateLimitSettings(requests=2, per="1h")
    async with served(clock, rate_limit=limit, auth=AuthSettings(tokens_env)) as c:
        codes = [
            (await c.get("/", headers=bearer(f"guess-{i:012d}"))).status_code for i in range(3)
        ]
    assert codes == [401, 401, 429]


def test_every_endpoint_has_a_rate_limit_unless_it_is_null() -> None:
    default = MetricsEndpoint(name="m", port=0).config.rate_limit
    assert default == RateLimitSettings()
    assert default is not None
    assert (default.requests, default.per_s, default.health_requests) == (1000, 1.0, None)
    assert MetricsEndpoint(name="m", port=0, rate_limit=None).config.rate_limit is None
    bp = parse_blueprint(BLUEPRINT.format(extra="tick_s: 1"))
    assert bp.component("m").config.rate_limit == RateLimitSettings()
    bp = parse_blueprint(BLUEPRINT.format(extra="rate_limit: null"))
    assert bp.component("m").config.rate_limit is None


async def test_the_default_limit_is_a_thousand_a_second_and_spares_the_health_routes(
    clock: FakeClock,
) -> None:
    """The endpoints' default over a real server, with the clock held: a burst of 1000
    passes, the next request meets 429, and the health routes still answer."""
    default = MetricsEndpoint(name="m", port=0).config.rate_limit
    async with served(clock, rate_limit=default) as c:
        codes = [(await c.get("/alerts")).status_code for _ in range(1000)]
        refused = await c.get("/components")
        health = [(await c.get(p)).status_code for p in ("/health", "/health/live")]
    assert codes == [200] * 1000
    assert refused.status_code == 429
    assert "1000 requests per 1s" in refused.json()["detail"]
    assert refused.headers["ratelimit-policy"] == "1000;w=1"
    assert health == [200, 200]


async def test_the_default_limit_is_counted_as_the_endpoints_own_figures() -> None:
    """The guards' counters are built-in families: in /metrics, not among the custom
    collectors of /metrics/json (nor in their error counts)."""
    for rate_limit in (RateLimitSettings(), None):
        ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, rate_limit=rate_limit)
        async with (
            streammetrics.serve(ep),
            httpx.AsyncClient(base_url=ep.url, timeout=5.0) as c,
        ):
            await c.get("/health")
            families = {f.name: f for f in parse_text((await c.get("/metrics")).text)}
            body = (await c.get("/metrics/json")).json()
        assert body["custom"] == {} and body["errors"] == []
        assert "streammetrics_collector_errors" not in families
        if rate_limit is None:
            assert "streammetrics_http_rate_limited" not in families
            continue
        limited = {
            s.labels["limit"]: s.value
            for s in families["streammetrics_http_rate_limited"].samples
            if s.name.endswith("_total")
        }
        clients = {
            s.labels["limit"]: s.value
            for s in families["streammetrics_http_rate_limit_clients"].samples
        }
        assert limited == {"default": 0.0, "health": 0.0}
        assert clients == {"default": 1.0, "health": 1.0}  # this test's one address


async def test_a_custom_collector_may_not_take_the_guards_names(clock: FakeClock) -> None:
    class Impostor(Collector):
        def collect(self) -> Iterator[Metric]:
            yield CounterMetricFamily("streammetrics_http_rate_limited", "mine", value=1)

    service = service_for(seed(clock), clock, tick_s=0)
    hardening(cors=None, rate_limit=RateLimitSettings(), auth=None, component="m", service=service)
    service.add_collector(Impostor())
    snap = await service.snapshot()
    assert any(
        "metric names already exposed: streammetrics_http_rate_limited" in e for e in snap.errors
    )
    text = (await service.prometheus()).decode()
    assert "mine" not in text and "streammetrics_http_rate_limited_total" in text


async def test_the_health_probes_are_treated_like_health(clock: FakeClock, tokens_env: str) -> None:
    probes = ("/health", "/health/live", "/health/ready")
    async with served(clock, auth=AuthSettings(tokens_env)) as c:
        for path in probes:
            assert (await c.get(path)).status_code == 200, path
            assert (await c.head(path)).status_code == 200, path
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.head("/metrics")).status_code == 401  # HEAD is guarded like GET
    async with served(clock, auth=AuthSettings(tokens_env, protect_health=True)) as c:
        for path in probes:
            assert (await c.get(path)).status_code == 401, path
            assert (await c.get(path, headers=bearer(TOKEN))).status_code == 200, path
    limit = RateLimitSettings(requests=1, health_requests=3, per="1h")
    async with served(clock, rate_limit=limit) as c:
        codes = [(await c.get(path)).status_code for path in probes]
        over = await c.head("/health/live")  # one bucket for the three, HEAD counted too
        scrape = await c.get("/metrics")  # the general bucket is apart
        scrape_head = await c.head("/metrics")
    assert codes == [200, 200, 200]
    assert over.status_code == 429
    assert scrape.status_code == 200
    assert scrape_head.status_code == 429


def test_token_bucket_sub_second_periods_and_bounded_clients() -> None:
    now = [0.0]
    bucket = TokenBucketLimiter(5, 0.5, max_clients=2, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(5)] == [0.0] * 5
    assert bucket.take("a") == pytest.approx(0.1)  # 10 tokens a second
    now[0] += 0.1
    assert bucket.take("a") == 0.0
    now[0] += 10.0  # long idle: full again, never more than capacity
    assert [bucket.take("a") for _ in range(6)][-1] > 0
    bucket.take("b")
    bucket.take("c")  # a third client: the least recently seen ("a") is forgotten
    stats = bucket.statistics()
    assert (stats.clients, stats.evicted) == (2, 1)
    assert stats.limited == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (" 1.5 s ", 1.5), (3, 3.0)],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


BLUEPRINT = """
system:
  name: s
  components:
    - name: m
      type: MetricsEndpoint
      config:
        port: 0
        {extra}
"""


def test_blueprint_rate_limit_section() -> None:
    bp = parse_blueprint(BLUEPRINT.format(extra="rate_limit: {requests: 100, per: 1s}"))
    cfg = bp.component("m").config
    assert (cfg.rate_limit.requests, cfg.rate_limit.per_s) == (100, 1.0)
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(BLUEPRINT.format(extra="rate_limit: {requests: 100, per: 7x}"))
    assert "system.components[0].config.rate_limit" in str(info.value)
    assert "rate_limit.per" in str(info.value)
    assert "'7x'" in str(info.value)
    with pytest.raises(
        BlueprintError, match=r"`allow_origin` - at `system.components\[0\].config.cors`"
    ):
        parse_blueprint(BLUEPRINT.format(extra="cors: {allow_origin: [x]}"))


# -- authentication ------------------------------------------------------------------------


async def test_401_without_a_valid_token(clock: FakeClock, tokens_env: str) -> None:
    async with served(clock, auth=AuthSettings(tokens_env)) as c:
        missing = await c.get("/metrics")
        wrong = await c.get("/metrics", headers=bearer(TOKEN[:-1] + "X"))
        basic = await c.get("/metrics", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        ok1 = await c.get("/metrics", headers=bearer(TOKEN))
        ok2 = await c.get("/metrics/json", headers={"authorization": f"bearer {TOKEN2}"})
        schema = await c.get("/schema/openapi.json")
        health = await c.get("/health")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="streammetrics"'
    assert missing.json() == {
        "error": "unauthorized",
        "detail": "this endpoint needs an 'Authorization: Bearer <token>' header",
        "status_code": 401,
    }
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert basic.status_code == 401
    assert 'error="invalid_request"' in basic.headers["www-authenticate"]
    assert (ok1.status_code, ok2.status_code) == (200, 200)
    assert schema.status_code == 401
    assert health.status_code == 200  # load balancers carry no token


async def test_protect_health(clock: FakeClock, tokens_env: str) -> None:
    async with served(clock, auth=AuthSettings(tokens_env, protect_health=True)) as c:
        assert (await c.get("/health")).status_code == 401
        assert (await c.get("/health", headers=bearer(TOKEN))).status_code == 200


async def test_secrets_never_appear_in_logs_errors_or_metrics(
    clock: FakeClock, tokens_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    near_miss = TOKEN[:-1] + "Z"  # a real token mistyped is a secret too
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    service = service_for(seed(clock), clock)
    # a producer that puts the token where a careless one might: in an event's detail
    service._aggregator.fold_events(  # type: ignore[union-attr]
        [Event("task_api", "error", detail=f"auth failed for {near_miss}")]
    )
    settings = AuthSettings(tokens_env)
    app = create_app(service, **hardening(cors=None, rate_limit=None, auth=settings, component="m"))
    async with running(app) as c:
        for headers in ({}, bearer(near_miss), bearer(TOKEN), {"Authorization": near_miss}):
            for path in ("/", "/metrics", "/metrics/json", "/components", "/alerts", "/nope"):
                r = await c.get(path, headers=headers)
                seen.append(r.text)
                seen.extend(f"{k}: {v}" for k, v in r.headers.items())
    seen.append(caplog.text)
    seen.append(repr(BearerTokens.from_env(tokens_env, component="m")))
    seen.append(repr(app))
    text = "\n".join(seen)
    assert "refused GET /metrics from 127.0.0.1" in caplog.text  # the attempt is logged...
    for secret in (TOKEN, TOKEN2):
        assert secret not in text  # ...the accepted tokens never
    assert near_miss not in caplog.text
    # the presented token shows only where the test itself put it: the event's detail
    assert all(f"auth failed for {near_miss}" in t for t in seen if near_miss in t)


def test_missing_or_bad_token_env_is_a_clear_error() -> None:
    env = "STREAMMETRICS_TEST_UNSET_TOKENS"
    os.environ.pop(env, None)
    with pytest.raises(ConfigError) as info:
        hardening(cors=None, rate_limit=None, auth=AuthSettings(env), component="metrics_a")
    assert env in str(info.value)
    assert "metrics_a" in str(info.value)
    assert "not set" in str(info.value)
    for value, expect in [("", "empty"), (" , ", "empty"), ("short-secret", "12 characters")]:
        os.environ[env] = value
        try:
            with pytest.raises(ConfigError, match=expect) as info:
                BearerTokens.from_env(env, component="m")
        finally:
            del os.environ[env]
        if value.strip(" ,"):
            assert value not in str(info.value)  # a bad token is still someone's secret


def test_run_with_auth_and_no_token_variable_exits_2(tmp_path: Any) -> None:
    bp = tmp_path / "auth.yaml"
    bp.write_text(BLUEPRINT.format(extra="auth: {bearer_tokens_env: SM_TEST_NO_SUCH_VAR}"))
    env = {k: v for k, v in os.environ.items() if k != "SM_TEST_NO_SUCH_VAR"}
    r = subprocess.run(
        [sys.executable, "-m", "streammetrics.cli", "run", str(bp)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert r.returncode == 2
    assert "SM_TEST_NO_SUCH_VAR" in r.stderr
    assert "'m'" in r.stderr
    assert "Traceback" not in r.stderr


async def test_what_the_guards_refuse_is_counted_in_the_exposition(
    clock: FakeClock, tokens_env: str
) -> None:
    service = service_for(seed(clock), clock, tick_s=0)
    kwargs = hardening(
        cors=None,
        rate_limit=RateLimitSettings(requests=3, health_requests=1, per="1h"),
        auth=AuthSettings(tokens_env),
        component="m",
        clock=clock.monotonic,
        service=service,
    )
    async with running(create_app(service, **kwargs)) as c:
        await c.get("/alerts")  # 401 missing
        await c.get("/alerts", headers=bearer("x" * 20))  # 401 invalid_token
        await c.get("/health")
        await c.get("/health")  # 429 health
        await c.get("/metrics", headers=bearer(TOKEN))
        await c.get("/metrics", headers=bearer(TOKEN))  # 429 default
        clock.advance(3600)
        text = (await c.get("/metrics", headers=bearer(TOKEN))).text
    families = {f.name: f for f in parse_text(text)}
    limited = {
        s.labels["limit"]: s.value
        for s in families["streammetrics_http_rate_limited"].samples
        if s.name.endswith("_total")
    }
    refused = {
        s.labels["reason"]: s.value
        for s in families["streammetrics_http_auth_refused"].samples
        if s.name.endswith("_total")
    }
    assert limited == {"default": 1.0, "health": 1.0}
    assert refused == {"missing": 1.0, "invalid_request": 0.0, "invalid_token": 1.0}
    assert TOKEN not in text
