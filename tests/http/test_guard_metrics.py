"""What the HTTP guards refuse, as built-in families of ``/metrics``: counted as the endpoint's own
figures, never a custom collector's, and no custom collector may take their names."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import MetricsEndpoint
from streammetrics.http.app import create_app
from streammetrics.http.hardening import hardening
from streammetrics.http.settings import AuthSettings, RateLimitSettings
from tests.support.exposition import by_label
from tests.support.guards import TOKEN, bearer
from tests.support.http_app import FakeClock, running, seed, service_for

pytestmark = pytest.mark.anyio


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
        limited = by_label(families["streammetrics_http_rate_limited"], "limit", "_total")
        clients = by_label(families["streammetrics_http_rate_limit_clients"], "limit")
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
        # On a new connection: the one just answered 429 holds its next request until the
        # 429's Retry-After (20 minutes here) has passed in real time (limits.rate_limited_hold_s).
        async with httpx.AsyncClient(base_url=c.base_url, timeout=5.0) as fresh:
            text = (await fresh.get("/metrics", headers=bearer(TOKEN))).text
    families = {f.name: f for f in parse_text(text)}
    limited = by_label(families["streammetrics_http_rate_limited"], "limit", "_total")
    refused = by_label(families["streammetrics_http_auth_refused"], "reason", "_total")
    assert limited == {"default": 1.0, "health": 1.0}
    assert refused == {"missing": 1.0, "invalid_request": 0.0, "invalid_token": 1.0}
    assert TOKEN not in text
