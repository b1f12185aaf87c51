"""Custom collectors: ones that exist already (metric objects, an exporter's) plug in as they
are, and one that raises, yields junk or takes a built-in name never breaks a response."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import MetricsEndpoint
from tests.support.collectors import Exporters, QueueDepth
from tests.support.exposition import by_label, families

pytestmark = pytest.mark.anyio


class Broken(Collector):
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("exporter backend down")


class Junk(Collector):
    def collect(self) -> Iterator[Any]:
        yield {"not": "a metric"}


class Clash(Collector):
    """Reuses a built-in name: it would make the exposition invalid."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("system_health_score", "mine", value=0.1)


async def test_existing_exporter_collectors_plug_in_unchanged() -> None:
    orders = Counter("orders_placed", "Orders placed", registry=None)
    orders.inc(4)
    ep = MetricsEndpoint(
        name="m", port=0, tick_s=0.1, plugins=[Exporters(orders, ProcessCollector(registry=None))]
    )
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        fams = families((await client.get("/metrics")).text)
        assert [s.value for s in fams["orders_placed"].samples if s.name.endswith("_total")] == [
            4.0
        ]
        assert fams["process_resident_memory_bytes"].samples[0].value > 0
        body = (await client.get("/metrics/json")).json()
        assert body["custom"]["orders_placed"]["type"] == "counter"
        assert "process_cpu_seconds" in body["custom"]


async def test_a_raising_collector_leaves_the_rest_served() -> None:
    good = QueueDepth()
    ep = MetricsEndpoint(
        name="m", port=0, tick_s=0.1, plugins=[Exporters(Broken(), good, Junk(), Clash())]
    )
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        r = await client.get("/metrics")
        assert r.status_code == 200
        fams = families(r.text)
        assert fams["orders_queue_depth"].samples[0].value == 3.0
        assert fams["system_health_score"].samples[0].value == 1.0  # the built-in one, not 0.1
        failures = by_label(fams["streammetrics_collector_errors"], "collector", "_total")
        assert failures["Broken"] >= 1 and failures["Junk"] >= 1 and failures["Clash"] >= 1
        assert failures["QueueDepth"] == 0
        body = (await client.get("/metrics/json")).json()
        assert set(body["custom"]) == {"orders_queue_depth"}
        errors = "\n".join(body["errors"])
        assert "collector 'Broken' failed: RuntimeError: exporter backend down" in errors
        assert "collector 'Junk' failed: TypeError" in errors
        assert "collector 'Clash' failed: ValueError: metric names already exposed" in errors
        assert "system_health_score" in errors
        health = await client.get("/health")
        assert health.status_code == 200  # collectors failing is not the system failing
