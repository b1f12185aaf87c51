"""What the HTTP guards refused, as built-in families of ``/metrics``.

A collector of the endpoint's own rather than a custom one: it only reads counters, so
it is read during the render instead of once per tick in a worker thread, and it cannot
fail (it is neither listed in ``/metrics/json``'s ``custom`` nor counted in the
collector errors).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .auth import AuthCounts
    from .ratelimit import RateLimits

__all__ = ("IngestAuthCollector", "SecurityCollector")


class SecurityCollector(Collector):
    """What the guards refused, for the operators' dashboards: a scrape flood shows up as
    ``streammetrics_http_rate_limited_total``, a misconfigured client or a guesser as
    ``streammetrics_http_auth_refused_total`` (by reason, never by token)."""

    def __init__(self, limits: RateLimits | None, auth: AuthCounts | None) -> None:
        self.limits = limits
        self.auth = auth

    def collect(self) -> Iterable[Metric]:
        out: list[Metric] = []
        if self.limits is not None:
            limited = CounterMetricFamily(
                "streammetrics_http_rate_limited",
                "Requests refused with 429, by limit (health: /health's own bucket)",
                labels=["limit"],
            )
            clients = GaugeMetricFamily(
                "streammetrics_http_rate_limit_clients",
                "Client addresses whose buckets are tracked",
                labels=["limit"],
            )
            for name, limiter in (("default", self.limits.default), ("health", self.limits.health)):
                st = limiter.statistics()
                limited.add_metric([name], st.limited)
                clients.add_metric([name], st.clients)
            out += (limited, clients)
        if self.auth is not None:
            refused = CounterMetricFamily(
                "streammetrics_http_auth_refused",
                "Requests refused with 401, by reason (RFC 6750)",
                labels=["reason"],
            )
            for reason, n in sorted(self.auth.refused.items()):
                refused.add_metric([reason], n)
            out.append(refused)
        return out


class IngestAuthCollector(Collector):
    """What ingest's own guard refused (``POST /events``), apart from the read auth's
    refusals: someone trying to write is not someone failing to read."""

    def __init__(self, counts: AuthCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        refused = CounterMetricFamily(
            "streammetrics_http_ingest_auth_refused",
            "Event posts refused, by reason: 401 missing, invalid_request, invalid_token "
            "(ingest.auth); 403 closed (a read auth and no ingest.auth)",
            labels=["reason"],
        )
        for reason, n in sorted(self.counts.refused.items()):
            refused.add_metric([reason], n)
        return [refused]
