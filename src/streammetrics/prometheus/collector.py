"""The Prometheus view of a ``Snapshot``: a prometheus-client custom collector.

The collector holds no figures of its own; it turns the snapshot of the moment into
metric families, so a render costs O(components x windows), never O(events).

Names: the seed's gauges (``system_health_score``, ``system_error_rate``,
``component_health``, ``circuit_breaker_state``) are kept exactly so existing Grafana
panels and alert rules keep working. ``system_uptime_seconds`` was a counter in the
seed, but prometheus-client always exposes a counter as ``<name>_total``; it is a gauge
here so the seed's name survives (PromQL queries on it work unchanged). The seed's
``component_items_processed`` counter is exposed, for the same reason, as
``component_items_processed_total``. Everything else follows Prometheus conventions:
counters end in ``_total``, units are in the names, base units (bytes, seconds).

Latency comes twice: ``component_latency_seconds`` is a real histogram (lifetime
buckets, for ``histogram_quantile`` over any range), and ``component_latency_p50_seconds``
(p95, p99) are gauges of the snapshot's window. The gauges are separate names, not one
gauge with a ``quantile`` label: that label is reserved for summaries (promtool rejects
it), and a summary's ``_count``/``_sum`` would have to be lifetime counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..breaker import BREAKER_CODES
from ..buckets import LATENCY_BOUNDS
from ..windows import VIEWS

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..snapshot import Snapshot

__all__ = ("SECTIONS", "SnapshotCollector", "le_labels")

#: The exposition's parts, in order: each is a method ``_<section>`` giving its families.
SECTIONS: Final = (
    "system",
    "components",
    "latency",
    "breakers",
    "streams",
    "process",
    "bookkeeping",
)


_QUANTILES: Final = ("p50", "p95", "p99")
_WINDOWS: Final = tuple(f"{s}s" for s in VIEWS)
_ALERT_LEVELS: Final = ("warning", "critical")
_MIB: Final = 2**20


@lru_cache(maxsize=8)
def le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values of a histogram over ``bounds`` (upper bounds, ascending),
    +Inf last, spelled as prometheus-client spells them."""
    return (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]


class SnapshotCollector(Collector):
    """Exposes whatever ``get_snapshot()`` returns; nothing when it returns None.

    ``buckets`` are the latency histogram's upper bounds for a snapshot that does not
    carry its own (``histogram_buckets``): ``component_histograms`` holds one count per
    bound plus one for +Inf, not cumulative. It is the reference of
    ``/metrics``: ``exposition.ExpositionWriter`` writes the same text faster, and the
    tests compare the two sample by sample.
    """

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot | None],
        buckets: Sequence[float] = LATENCY_BOUNDS,
    ) -> None:
        self._get_snapshot = get_snapshot
        self._buckets = tuple(buckets)

    def describe(self) -> Iterable[Metric]:
        """Every family this collector may expose, so a registry catches name clashes
        with other collectors when they are registered rather than at scrape time."""
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        snap = self._get_snapshot()
        if snap is None:
            return []
        # A family without samples (no streams yet, no process figures) is left out: a
        # bare HELP/TYPE pair tells a scraper nothing.
        return [f for f in self._families(snap) if f.samples]

    # -- families -----------------------------------------------------------------------

    def _g(self, name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=list(labels))

    def _c(self, name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=list(labels))

    def section(self, name: str, snap: Snapshot | None) -> list[Metric]:
        """The families of one of ``SECTIONS`` for ``snap`` (empty ones included; their
        names, help and types alone when ``snap`` is None)."""
        if name not in SECTIONS:
            raise ValueError(f"no section {name!r}; the sections are {', '.join(SECTIONS)}")
        families: Iterator[Metric] = getattr(self, f"_{name}")(snap)
        return list(families)

    def _families(self, snap: Snapshot | None) -> Iterator[Metric]:
        for name in SECTIONS:
            yield from self.section(name, snap)

    def _system(self, snap: Snapshot | None) -> Iterator[Metric]:
        score = self._g("system_health_score", "System health score (0.0 to 1.0)")
        uptime = self._g(
            "system_uptime_seconds",
            "System uptime in seconds (a gauge so the seed's name is kept without _total)",
        )
        err = self._g("system_error_rate", "System-wide error rate")
        ips = self._g("system_items_per_second", "Items processed per second, system-wide")
        rate = self._g("system_message_rate", "Stream messages per second, system-wide")
        if snap is not None:
            perf = snap.performance
            score.add_metric([], snap.health_score)
            uptime.add_metric([], snap.uptime_seconds)
            err.add_metric([], perf.error_rate)
            ips.add_metric([], perf.items_per_second)
            rate.add_metric([], perf.message_rate)
        yield from (score, uptime, err, ips, rate)

    def _components(self, snap: Snapshot | None) -> Iterator[Metric]:
        c = ("component",)
        cw = ("component", "window")
        health = self._g("component_health", "Component health status (1=healthy, 0=unhealthy)", c)
        score = self._g("component_health_score", "Component health score (0.0 to 1.0)", c)
        items = self._c("component_items_processed", "Total items processed by component", c)
        errors = self._c("component_errors", "Total errors encountered by component", c)
        client = self._c(
            "component_client_errors", "Requests refused as the client's fault (4xx)", c
        )
        ips = self._g("component_items_per_second", "Items processed per second over window", cw)
        erate = self._g("component_error_rate", "errors / (processed + errors) over window", cw)
        if snap is not None:
            for name, st in snap.detailed_components.items():
                health.add_metric([name], 1.0 if st.is_healthy else 0.0)
                score.add_metric([name], st.health)
                items.add_metric([name], st.items_processed)
                errors.add_metric([name], st.errors_encountered)
                client.add_metric([name], st.client_errors)
                for w in _WINDOWS:
                    v = st.windows.get(w)
                    if v is not None:
                        ips.add_metric([name, w], v.items_per_second)
                        erate.add_metric([name, w], v.error_rate)
        yield from (health, score, items, errors, client, ips, erate)

    def _latency(self, snap: Snapshot | None) -> Iterator[Metric]:
        # One gauge per quantile rather than a ``quantile`` label: that label belongs to
        # summaries, and promtool rejects it on a gauge.
        quants = [
            (
                attr,
                self._g(
                    f"component_latency_{attr}_seconds",
                    f"Latency {attr} over the window (interpolated from the histogram)",
                    ("component", "window"),
                ),
            )
            for attr in _QUANTILES
        ]
        span_quants = [
            (
                attr,
                self._g(
                    f"component_span_latency_{attr}_seconds",
                    f"Span duration {attr} over the window (span_start to span_end)",
                    ("component", "window"),
                ),
            )
            for attr in _QUANTILES
        ]
        hist = HistogramMetricFamily(
            "component_latency_seconds",
            "Latency of processed items and spans since start",
            labels=["component"],
        )
        if snap is not None:
            window = f"{snap.performance.window_seconds}s"
            for name, st in snap.detailed_components.items():
                lat = st.latency
                for attr, family in quants:
                    value: float | None = getattr(lat, attr)
                    if value is not None:
                        family.add_metric([name, window], value)
                spans = st.span_latency
                if spans is not None:
                    for attr, family in span_quants:
                        value = getattr(spans, attr)
                        if value is not None:
                            family.add_metric([name, window], value)
            les = le_labels(snap.histogram_buckets or self._buckets)
            for name, counts in snap.component_histograms.items():
                if not any(counts):
                    continue  # never timed: 42 zero buckets would only cost cardinality
                cumulative: list[tuple[str, float]] = []
                total = 0
                for le, n in zip(les, counts, strict=True):
                    total += n
                    cumulative.append((le, total))
                hist.add_metric([name], cumulative, snap.latency_sums.get(name, 0.0))
        yield from (*(f for _a, f in quants), *(f for _a, f in span_quants), hist)

    def _breakers(self, snap: Snapshot | None) -> Iterator[Metric]:
        """Series only for components that have a breaker (``circuit_breakers`` lists no
        other): a ``0`` for one without would read as "protected, and closed"."""
        c = ("component",)
        state = self._g(
            "circuit_breaker_state", "Circuit breaker state (0=closed, 1=open, 2=half_open)", c
        )
        failures = self._c("circuit_breaker_failures", "Times the circuit breaker opened", c)
        if snap is not None:
            for name, b in snap.circuit_breakers.items():
                state.add_metric([name], BREAKER_CODES[b.state])
                failures.add_metric([name], b.failure_count)
        yield from (state, failures)

    def _streams(self, snap: Snapshot | None) -> Iterator[Metric]:
        s = ("stream",)
        total = self._c("stream_messages", "Messages sent on the stream since start", s)
        rate = self._g("stream_message_rate", "Messages per second on the stream over window", s)
        used = self._g("stream_buffer_used", "Messages waiting in the stream's buffer", s)
        size = self._g("stream_buffer_size", "Capacity of the stream's buffer", s)
        if snap is not None:
            for name, st in snap.streaming.streams.items():
                total.add_metric([name], st.total_messages)
                rate.add_metric([name], st.message_rate)
                if st.buffer_used is not None:
                    used.add_metric([name], st.buffer_used)
                if st.buffer_size is not None:
                    size.add_metric([name], st.buffer_size)
        yield from (total, rate, used, size)

    def _process(self, snap: Snapshot | None) -> Iterator[Metric]:
        # Prefixed: prometheus-client's own ProcessCollector owns process_resident_memory_bytes.
        rss = self._g(
            "streammetrics_process_resident_memory_bytes", "Resident memory of the endpoint process"
        )
        cpu = self._g(
            "streammetrics_process_cpu_percent",
            "CPU use of the endpoint process since the previous sample (100 = one core)",
        )
        if snap is not None:
            perf = snap.performance
            if perf.memory_usage_mb is not None:
                rss.add_metric([], perf.memory_usage_mb * _MIB)
            if perf.cpu_usage_percent is not None:
                cpu.add_metric([], perf.cpu_usage_percent)
        yield from (rss, cpu)

    def _bookkeeping(self, snap: Snapshot | None) -> Iterator[Metric]:
        traces = self._c("traces", "Traces seen since start")
        active = self._g("spans_active", "Spans started and not yet ended")
        expired = self._c(
            "spans_expired", "Spans that never ended within span_timeout_s, given up on"
        )
        rejected = self._c(
            "streammetrics_events_rejected",
            "Events that could not be folded, by reason",
            ("reason",),
        )
        evicted = self._c(
            "streammetrics_components_evicted",
            "Components evicted after component_ttl_s without a report (undeclared only)",
        )
        streams_evicted = self._c(
            "streammetrics_streams_evicted",
            "Streams evicted after component_ttl_s without a report (undeclared only)",
        )
        alerts = self._g("alerts_firing", "Alerts firing, by level", ("level",))
        failed = self._g(
            "streammetrics_collection_errors",
            "Collectors that failed for the current snapshot (its figures are partial)",
        )
        if snap is not None:
            traces.add_metric([], snap.traces.total_traces)
            active.add_metric([], snap.traces.active_spans)
            expired.add_metric([], snap.traces.expired_spans)
            reasons = dict(snap.rejected)
            reasons.setdefault("malformed", 0)  # the series exists before the first rejection
            for reason, n in sorted(reasons.items()):
                rejected.add_metric([reason], n)
            evicted.add_metric([], snap.components_evicted)
            streams_evicted.add_metric([], snap.streams_evicted)
            firing = dict.fromkeys(_ALERT_LEVELS, 0)
            for a in snap.alerts:
                if a.state == "firing":
                    firing[a.level] = firing.get(a.level, 0) + 1
            for level, n in firing.items():
                alerts.add_metric([level], n)
            failed.add_metric([], len(snap.errors))
        yield from (traces, active, expired, rejected, evicted, streams_evicted, alerts, failed)
