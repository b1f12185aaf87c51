"""ProductionMetricsEndpoint: CORS and a rate limit on by default, the specification's
switches, and a type a blueprint can name."""

from __future__ import annotations

import anyio
import httpx
import pytest

import streammetrics
from streammetrics import ProductionMetricsEndpoint
from streammetrics.blueprint import parse_blueprint


@pytest.mark.anyio
async def test_production_endpoint_has_cors_and_a_rate_limit_by_default() -> None:
    ep = ProductionMetricsEndpoint(name="prod", port=0)
    assert ep.config.cors is not None and ep.config.rate_limit is not None
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/metrics/json", headers={"origin": "https://dash.example"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        # Requests faster than the default bucket refills (100 at once, then 100/s) meet
        # 429s once the burst is spent: fifty clients in a loop until the first one (on a
        # busy machine the server answers more slowly, so a fixed burst could be refilled
        # as fast as it is spent).
        codes: list[int] = []

        async def hit() -> None:
            while 429 not in codes and len(codes) < 5000:
                codes.append((await client.get("/alerts")).status_code)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(hit)
        assert codes.count(429) > 0 and codes.count(200) >= 100, sorted(set(codes))


@pytest.mark.anyio
async def test_the_specifications_production_endpoint() -> None:
    production_metrics = ProductionMetricsEndpoint(
        name="prod_metrics",
        port=9090,
        enable_cors=True,  # For web dashboard access
    )
    cfg = production_metrics.config
    assert (production_metrics.name, cfg.port) == ("prod_metrics", 9090)
    assert cfg.cors is not None and cfg.cors.allow_origins == ["*"]
    assert cfg.rate_limit is not None and cfg.rate_limit.requests == 100  # stricter
    # the same call on a free port, served
    ep = ProductionMetricsEndpoint(name="prod_metrics", port=0, enable_cors=True)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/health", headers={"origin": "https://grafana.example"})
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        assert r.headers["access-control-allow-origin"] == "*"
        assert (await client.head("/health")).status_code == 200
        assert (await client.get("/health/ready")).json() == {"status": "healthy"}
        assert "/health/live" in (await client.get("/")).json()["endpoints"]


def test_production_endpoint_takes_the_specifications_switches() -> None:
    ep = ProductionMetricsEndpoint(name="prod", port=0, enable_cors=False, enable_rate_limit=False)
    assert ep.config.cors is None and ep.config.rate_limit is None
    ep = ProductionMetricsEndpoint(
        name="prod", port=0, enable_cors=True, cors={"allow_origins": ["https://a.example"]}
    )
    assert ep.config.cors is not None
    assert ep.config.cors.allow_origins == ["https://a.example"]


def test_production_endpoint_is_a_blueprint_type() -> None:
    bp = parse_blueprint(
        "system:\n  name: s\n  components:\n"
        "    - {name: m, type: ProductionMetricsEndpoint, config: {port: 0}}\n"
    )
    cfg = bp.component("m").config
    assert cfg.cors is not None and cfg.rate_limit is not None
