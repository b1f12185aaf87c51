"""The Redis consumer's figures for ``/metrics`` (``RedisCollector``).

Apart from the consumer so that the consumer does not depend on the Prometheus client:
the endpoint registers this collector beside its own when it has a Redis source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .redis_source import RedisSource, RedisSourceStatistics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ("RedisCollector",)


class RedisCollector(Collector):
    """The consumer's figures for ``/metrics``; ``{stream, group}`` labels, so several
    instances of one group aggregate in Prometheus (``max`` for the group's lag and
    pending, which every member reports alike; ``sum`` for the counters)."""

    def __init__(self, source: RedisSource) -> None:
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return [f for f in self._families(self.source.statistics()) if f.samples]

    def _families(self, st: RedisSourceStatistics | None) -> list[Metric]:
        labels = ["stream", "group"]
        up = GaugeMetricFamily(
            "streammetrics_redis_up", "1 while the consumer is connected to Redis", labels=labels
        )
        lag = GaugeMetricFamily(
            "streammetrics_redis_consumer_lag",
            "Entries of the stream not yet delivered to the group (XINFO GROUPS lag)",
            labels=labels,
        )
        pending = GaugeMetricFamily(
            "streammetrics_redis_pending_entries",
            "Entries delivered to the group and not yet acknowledged",
            labels=labels,
        )
        entries = CounterMetricFamily(
            "streammetrics_redis_entries",
            "Stream entries read and acknowledged by this consumer",
            labels=labels,
        )
        events = CounterMetricFamily(
            "streammetrics_redis_events", "Events folded from the stream", labels=labels
        )
        claimed = CounterMetricFamily(
            "streammetrics_redis_claimed_entries",
            "Entries taken over from consumers presumed dead (XAUTOCLAIM)",
            labels=labels,
        )
        recovered = CounterMetricFamily(
            "streammetrics_redis_recovered_entries",
            "Own unacknowledged entries read again after a start or reconnect",
            labels=labels,
        )
        reconnects = CounterMetricFamily(
            "streammetrics_redis_reconnects", "Connection losses to Redis", labels=labels
        )
        server_errors = CounterMetricFamily(
            "streammetrics_redis_server_errors",
            "Reads Redis answered with an error other than a missing group, each retried",
            labels=labels,
        )
        dead = CounterMetricFamily(
            "streammetrics_redis_dead_letters",
            "Entries that could not be decoded: acknowledged and copied to <stream>:dead",
            labels=labels,
        )
        removed = CounterMetricFamily(
            "streammetrics_redis_removed_consumers",
            "Idle consumers removed from the group (XGROUP DELCONSUMER)",
            labels=labels,
        )
        fams: list[Metric] = [up, lag, pending, entries, events, claimed, recovered, reconnects]
        fams += [server_errors, dead, removed]
        if st is not None:
            v = [st.stream, st.group]
            up.add_metric(v, 1.0 if st.connected else 0.0)
            if st.lag is not None:
                lag.add_metric(v, st.lag)
            if st.pending is not None:
                pending.add_metric(v, st.pending)
            entries.add_metric(v, st.entries)
            events.add_metric(v, st.events)
            claimed.add_metric(v, st.claimed)
            recovered.add_metric(v, st.recovered)
            reconnects.add_metric(v, st.reconnects)
            server_errors.add_metric(v, st.server_errors)
            dead.add_metric(v, st.dead_letters)
            removed.add_metric(v, st.removed_consumers)
        return fams
