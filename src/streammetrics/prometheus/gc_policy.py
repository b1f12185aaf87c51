"""The garbage-collector policy's figures as built-in families of ``/metrics``.

Why export them: freezing trades full-collection pauses for memory pinned until the next
thaw (see ``collector_policy``); an operator who sees RSS creep or a pause in a latency
graph needs to know how often the endpoint froze, how much is frozen and what its own
full collections cost, beside the interpreter's collection counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..collector_policy import CollectorPolicy

__all__ = ("GCPolicyCollector",)


class GCPolicyCollector(Collector):
    """Reads one endpoint's ``CollectorPolicy`` during the render (counters only: it
    cannot fail or block)."""

    def __init__(self, policy: CollectorPolicy) -> None:
        self.policy = policy

    def collect(self) -> Iterable[Metric]:
        st = self.policy.statistics()
        yield CounterMetricFamily(
            "streammetrics_gc_freezes",
            "gc.freeze() calls made by this endpoint's collector policy (config.gc)",
            value=st.freezes,
        )
        yield CounterMetricFamily(
            "streammetrics_gc_policy_collections",
            "Full collections the policy ran after unfreezing (one per config.gc.thaw_s)",
            value=st.full_collections,
        )
        yield GaugeMetricFamily(
            "streammetrics_gc_frozen_objects",
            "Objects in the collector's permanent generation at the policy's last thaw",
            value=st.frozen_objects,
        )
        if st.last_full_collection_ms is not None:
            yield GaugeMetricFamily(
                "streammetrics_gc_policy_last_collection_seconds",
                "How long the policy's last full collection held the event loop",
                value=st.last_full_collection_ms / 1000,
            )
