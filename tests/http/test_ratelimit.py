"""Per-client rate limits through a real server: 429 with Retry-After and a JSON body, the
health routes' own limit, the default of every endpoint, and the token bucket itself."""

from __future__ import annotations

import httpx
import pytest

from streammetrics import MetricsEndpoint
from streammetrics.blueprint import parse_blueprint
from streammetrics.errors import BlueprintError
from streammetrics.http.ratelimit import TokenBucketLimiter
from streammetrics.http.settings import AuthSettings, CorsSettings, RateLimitSettings
from tests.support.guards import BLUEPRINT, ORIGIN, TOKEN, bearer, served
from tests.support.http_app import FakeClock

pytestmark = pytest.mark.anyio


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


async def test_a_429_carries_the_cors_and_security_headers(clock: FakeClock) -> None:
    """The refusal is sent through the ASGI send inside Litestar's CORS layer and its
    before_send hook: a browser can read it, and it is never sniffed or cached."""
    cors = CorsSettings(allow_origins=[ORIGIN])
    async with served(clock, cors=cors, rate_limit=RateLimitSettings(requests=1, per="1h")) as c:
        assert (await c.get("/components", headers={"Origin": ORIGIN})).status_code == 200
        refused = await c.get("/alerts", headers={"Origin": ORIGIN})
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.headers["cache-control"] == "no-store"
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"] == "too many requests"
