"""``MetricsPlugin``: routes, collectors and figures brought to an endpoint without subclassing;
a plugin that fails fails alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest
from litestar import get
from litestar.types import ControllerRouterHandler
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import MetricsEndpoint, MetricsPlugin
from tests.support.collectors import QueueDepth
from tests.support.waiting import poll

pytestmark = pytest.mark.anyio


class OrdersPlugin(MetricsPlugin):
    name = "orders"

    def __init__(self) -> None:
        self.calls = 0

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        @get("/orders/stats")
        async def stats(service: streammetrics.http.Service) -> dict[str, Any]:
            snap = await service.snapshot()
            return {"components": snap.components.total}

        return [stats]

    def collectors(self) -> Sequence[Collector]:
        return [QueueDepth()]

    async def figures(self) -> Mapping[str, Any]:
        self.calls += 1
        return {"calls": self.calls}


class FailingFigures(MetricsPlugin):
    name = "flaky"

    async def figures(self) -> Mapping[str, Any]:
        raise ConnectionError("inventory service down")


async def test_plugins_add_routes_collectors_and_figures_and_fail_alone() -> None:
    ep = MetricsEndpoint(name="m", port=0, tick_s=0.1, plugins=[OrdersPlugin(), FailingFigures()])
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/orders/stats")
        assert r.status_code == 200 and r.json() == {"components": 1}
        body = await poll(
            client, "/metrics/json", lambda b: b["extra"].get("orders", {}).get("calls")
        )
        assert "orders_queue_depth" in body["custom"]
        assert "flaky" not in body["extra"]
        assert any(
            e == "figures 'flaky' failed: ConnectionError: inventory service down"
            for e in body["errors"]
        )
