"""Custom collectors and a plugin that brings existing ones, shared by the tests of the
extension points."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streammetrics import MetricsPlugin


class QueueDepth(Collector):
    """A custom collector in prometheus-client's style."""

    def __init__(self) -> None:
        self.depth = 3

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("orders_queue_depth", "Orders waiting", labels=["queue"])
        g.add_metric(["main"], self.depth)
        yield g


class Exporters(MetricsPlugin):
    """Collectors that exist already (metric objects, an exporter's), brought as they are."""

    name = "exporters"

    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collectors(self) -> Sequence[Collector]:
        return self._collectors
