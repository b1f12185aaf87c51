"""The Alertmanager notifier's figures for ``/metrics`` and ``/metrics/json``
(``AlertmanagerCollector``).

Apart from the notifier so that the notifier does not depend on the Prometheus client:
the endpoint registers this collector beside its own when it delivers alerts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .alertmanager import AlertmanagerNotifier, AlertmanagerStatistics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ("AlertmanagerCollector",)


class AlertmanagerCollector(Collector):
    """Alerts posted by result, per Alertmanager (``{alertmanager}`` is its URL without
    a password), and what each is owed: ``sum by (result)`` gives the endpoint's total."""

    def __init__(self, notifier: AlertmanagerNotifier) -> None:
        self.notifier = notifier

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return [f for f in self._families(self.notifier.statistics()) if f.samples]

    def _families(self, st: AlertmanagerStatistics | None) -> list[Metric]:
        notifications = CounterMetricFamily(
            "streammetrics_alertmanager_notifications",
            "Alerts posted to Alertmanager, by result: sent, failed (retried), rejected "
            "(refused with a 4xx), dropped (resolved, given up on undelivered)",
            labels=["alertmanager", "result"],
        )
        due = GaugeMetricFamily(
            "streammetrics_alertmanager_due_alerts",
            "Alerts an Alertmanager is owed now (new, changed or due for their resend)",
            labels=["alertmanager"],
        )
        failing = GaugeMetricFamily(
            "streammetrics_alertmanager_consecutive_failures",
            "Failed posts to an Alertmanager since the last one it accepted",
            labels=["alertmanager"],
        )
        if st is not None:
            for t in st.targets:
                for result, n in (
                    ("sent", t.sent),
                    ("failed", t.failed),
                    ("rejected", t.rejected),
                    ("dropped", t.dropped),
                ):
                    notifications.add_metric([t.url, result], n)
                due.add_metric([t.url], t.due)
                failing.add_metric([t.url], t.consecutive_failures)
        return [notifications, due, failing]
