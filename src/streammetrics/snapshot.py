"""What the handlers read: the figures of one instant, as msgspec Structs.

Field names are fixed (``health_score``, ``detailed_components``,
``items_processed``…: users parse them); fields are added, none renamed. A snapshot is
immutable and built at most once per tick, so every route of one tick agrees and no
handler ever walks raw events.

Two stages make one: the aggregator's ``Figures`` (what was folded: counts, rates,
latencies, breakers, streams) and the judge's verdict on them (health scores, status,
reasons, and the alerts in an ``AlertReport``), which together are the ``Snapshot``.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from .windows import WindowStats

__all__ = (
    "NO_ALERTS",
    "Alert",
    "AlertReport",
    "BreakerState",
    "BreakerStatus",
    "ComponentCounts",
    "ComponentFigures",
    "ComponentStatus",
    "ComponentTable",
    "Deduction",
    "Figures",
    "Performance",
    "ProcessStats",
    "Recommendation",
    "Snapshot",
    "Status",
    "StreamStatus",
    "Streaming",
    "Traces",
)

Status = Literal["healthy", "degraded", "unhealthy"]
BreakerState = Literal["closed", "open", "half_open"]
ComponentRunState = Literal["registered", "running", "stopped", "failed"]


class ProcessStats(msgspec.Struct, frozen=True):
    """What the process sampler read (psutil), or None fields when it could not."""

    memory_usage_mb: float | None = None
    cpu_usage_percent: float | None = None


class Latency(msgspec.Struct, frozen=True, gc=False):
    """Latency quantiles in seconds over the default window; null when nothing was timed."""

    p50: float | None
    p95: float | None
    p99: float | None
    count: int


class ComponentFigures(msgspec.Struct, frozen=True, gc=False):
    """One component as the aggregator folded it: ``ComponentStatus`` without the
    judgement (``is_healthy``, ``health``), which the judge adds."""

    items_processed: int
    errors_encountered: int
    status: ComponentRunState
    last_activity: float | None
    type: str | None
    items_per_second: float
    error_rate: float
    latency: Latency
    last_error: str | None
    windows: dict[str, WindowStats]
    span_latency: Latency | None = None
    heartbeat_age_s: float | None = None
    client_errors: int = 0


class ComponentTable(dict[str, ComponentFigures]):
    """``Figures.detailed_components`` as the aggregator reads them: a dict (encoded as
    one) that also says what it has anew, which lets the judge judge only those again.
    A decoded or copied table is a plain dict, and says nothing."""

    __slots__ = ("changed", "read")

    def __init__(self, *args: dict[str, ComponentFigures]) -> None:
        super().__init__(*args)
        #: This read's number (unique in the process), that a later read names.
        self.read = 0
        #: When this read copied an earlier one's table: that read's number, and the
        #: components read anew (the others are that read's very objects). None: every
        #: component was read anew.
        self.changed: tuple[int, list[str]] | None = None


class ComponentStatus(msgspec.Struct, frozen=True, gc=False):
    is_healthy: bool
    items_processed: int
    errors_encountered: int
    status: ComponentRunState
    last_activity: float | None
    """Unix seconds of the last event from this component."""
    type: str | None
    health: float
    """This component's own score, 0.0 to 1.0."""
    items_per_second: float
    error_rate: float
    latency: Latency
    last_error: str | None
    windows: dict[str, WindowStats]
    """The 10s, 60s and 300s views."""
    span_latency: Latency | None = None
    """Duration of this component's spans (``span_end``) over the default window; null
    when it never ended one. ``latency`` includes them too, mixed with item latencies."""
    heartbeat_age_s: float | None = None
    """Seconds since its last heartbeat; null if it never sent one."""
    client_errors: int = 0
    """Requests it refused as their client's fault (4xx answers): counted apart from
    ``errors_encountered``, and never in its error rate or health."""


class BreakerStatus(msgspec.Struct, frozen=True, gc=False):
    state: BreakerState
    failure_count: int
    last_failure: float | None
    """Unix seconds of the last failure, or null."""
    time_open_seconds: float
    """Seconds spent open (or half-open) in total."""
    transitions: int


class StreamStatus(msgspec.Struct, frozen=True, gc=False):
    total_messages: int
    message_rate: float
    from_component: str | None
    to_component: str | None
    stream_name: str | None
    buffer_used: int | None
    buffer_size: int | None
    consumer_lag: int | None = None
    """Entries a transport's consumer group has yet to read (Redis ``XINFO GROUPS``
    lag); null for in-process bindings."""
    stalled_seconds: float | None = None
    """While items wait in the buffer: seconds since the consumer was last seen taking
    one (near 0 for a busy consumer, growing for one that takes nothing); null when the
    buffer is empty or its level is unknown."""
    source_up: bool | None = None
    """For a stream an event source beyond the process feeds (``redis:<stream>``):
    whether that source can read it; null for in-process bindings."""


class Streaming(msgspec.Struct, frozen=True, gc=False):
    active_streams: int
    total_messages: int
    message_rate: float
    streams: dict[str, StreamStatus]


class Performance(msgspec.Struct, frozen=True, gc=False):
    error_rate: float
    memory_usage_mb: float | None
    cpu_usage_percent: float | None
    items_per_second: float
    message_rate: float
    latency: Latency
    window_seconds: int


class Traces(msgspec.Struct, frozen=True, gc=False):
    total_traces: int
    """Distinct trace ids seen in ``span_start`` events."""
    active_spans: int
    """Spans started and neither ended nor expired."""
    completed_spans: int
    """``span_end`` events folded."""
    expired_spans: int
    """Spans that never ended within ``span_timeout_s`` (or were pushed out of the
    bounded span table), given up on and counted here."""


class Alert(msgspec.Struct, frozen=True, gc=False):
    level: Literal["warning", "critical"]
    message: str
    component: str | None
    timestamp: float
    name: str = ""
    state: Literal["pending", "firing", "resolved"] = "firing"
    since: float | None = None
    value: float | None = None
    resolved_at: float | None = None


class Recommendation(msgspec.Struct, frozen=True, gc=False):
    type: Literal["performance", "reliability", "capacity"]
    message: str
    component: str | None
    figure: str | None = None
    value: float | None = None


class AlertReport(msgspec.Struct, frozen=True, gc=False):
    """The alert rules' outcome at one evaluation, by lifecycle state."""

    alerts: list[Alert]
    """Firing."""
    pending_alerts: list[Alert]
    resolved_alerts: list[Alert]
    recommendations: list[Recommendation]


#: No rules evaluated: what a snapshot shows without an alert engine.
NO_ALERTS: Final = AlertReport([], [], [], [])


class Deduction(msgspec.Struct, frozen=True, gc=False):
    """One reason the health score is below 1.0."""

    component: str | None
    reason: str
    penalty: float


class ComponentCounts(msgspec.Struct, frozen=True, gc=False):
    total: int
    healthy: int
    running: int


class Figures(msgspec.Struct, frozen=True, gc=False):
    """What the aggregator folded, as of one instant, over one view: every part of a
    ``Snapshot`` but the judgement (health, status, reasons, alerts).

    ``streaming.streams[*].stalled_seconds`` is left null here: how long a stream has
    been stalled is tracked by the judge, across snapshots."""

    timestamp: float
    uptime_seconds: float
    detailed_components: dict[str, ComponentFigures]
    circuit_breakers: dict[str, BreakerStatus]
    streaming: Streaming
    performance: Performance
    traces: Traces
    rejected: dict[str, int]
    errors: list[str]
    total_histogram: list[int]
    component_histograms: dict[str, list[int]]
    latency_sums: dict[str, float]
    histogram_buckets: tuple[float, ...] = ()
    """The upper bounds of the histograms' buckets (``+Inf`` after the last)."""
    components_evicted: int = 0
    streams_evicted: int = 0


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    timestamp: float
    uptime_seconds: float
    health_score: float
    system_status: Status
    components: ComponentCounts
    detailed_components: dict[str, ComponentStatus]
    circuit_breakers: dict[str, BreakerStatus]
    """Only the components that have a circuit breaker (a component without one is not
    listed, rather than listed as closed)."""
    streaming: Streaming
    performance: Performance
    traces: Traces
    alerts: list[Alert]
    recommendations: list[Recommendation]
    reasons: list[Deduction]
    rejected: dict[str, int]
    """Events that could not be folded, by reason (malformed, cardinality…)."""
    errors: list[str]
    """Collectors that failed while this snapshot was built; the rest is still here."""
    total_histogram: list[int]
    """System-wide lifetime latency bucket counts, in the exported buckets
    (``histogram_buckets``, then ``+Inf``; not cumulative)."""
    component_histograms: dict[str, list[int]]
    """Per-component lifetime latency bucket counts in the exported buckets
    (``histogram_buckets``, then ``+Inf``; not cumulative), for Prometheus histograms."""
    latency_sums: dict[str, float]
    """Per-component lifetime latency sums, for Prometheus histograms."""
    histogram_buckets: tuple[float, ...] = ()
    """The upper bounds of ``total_histogram``'s and ``component_histograms``' buckets
    (the endpoint's ``histogram_buckets``; ``+Inf`` after the last)."""
    pending_alerts: list[Alert] = []
    """Alerts whose condition holds but whose ``for`` has not yet elapsed."""
    resolved_alerts: list[Alert] = []
    """Alerts that fired and stopped, kept for the configured retention."""
    components_evicted: int = 0
    """Components evicted after ``component_ttl_s`` without a report, since start."""
    streams_evicted: int = 0
    """Streams evicted the same way, since start."""
