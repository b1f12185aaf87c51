"""The state an ``Aggregator`` keeps for each component, each stream and the open spans,
and how each reads as figures.

Every piece is bounded whatever the number of events: a component or a stream is one
``RollingWindow`` and a few scalars, and the span table holds at most ``max_spans``
entries, dropping (and counting) the oldest.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from itertools import filterfalse

import msgspec

from .buckets import LATENCY_BOUNDS
from .model.events import Event
from .snapshot import (
    BreakerState,
    BreakerStatus,
    ComponentFigures,
    ComponentRunState,
    Latency,
    StreamStatus,
    Traces,
)
from .windows import RollingWindow, Views, ViewSeconds, WindowStats

__all__ = (
    "BufferStats",
    "ComponentState",
    "LagStats",
    "ReportedBreaker",
    "SpanTable",
    "StreamState",
    "latency_figures",
)

BufferStats = Callable[[], tuple[int, int]]
"""(used, size) of a binding's queue."""
LagStats = Callable[[], int | None]
"""Entries a transport's consumer has not read yet, or None when it cannot tell."""


def latency_figures(v: WindowStats) -> Latency:
    """The latency figures of one view."""
    return Latency(p50=v.p50, p95=v.p95, p99=v.p99, count=v.latency_count)


class ReportedBreaker:
    """A component's circuit breaker as its ``breaker`` events report it (the breaker
    itself may run in another process)."""

    __slots__ = ("failure_count", "last_failure", "opened_at", "state", "time_open", "transitions")

    def __init__(self) -> None:
        self.state: BreakerState = "closed"
        self.failure_count = 0
        self.last_failure: float | None = None
        self.opened_at: float | None = None  # monotonic, while not closed
        self.time_open = 0.0
        self.transitions = 0

    def move_to(self, state: BreakerState, now: float, wall: float) -> None:
        """A reported transition: ``now`` monotonic, ``wall`` unix seconds. Open and
        half-open both count as open time; only a move into ``open`` is a failure."""
        if state == self.state:
            return
        self.transitions += 1
        if state == "open":
            self.failure_count += 1
            self.last_failure = wall
        if self.state == "closed":
            self.opened_at = now
        elif state == "closed" and self.opened_at is not None:
            self.time_open += now - self.opened_at
            self.opened_at = None
        self.state = state

    def status(self, now: float) -> BreakerStatus:
        open_for = self.time_open + (now - self.opened_at if self.opened_at is not None else 0.0)
        return BreakerStatus(
            state=self.state,
            failure_count=self.failure_count,
            last_failure=self.last_failure,
            time_open_seconds=open_for,
            transitions=self.transitions,
        )


class ComponentState:
    """What is known of one component: its window, run state, and the last of each
    report (activity, error, heartbeat).

    ``declared``: made known by the blueprint or by code (registered, or reported by a
    probe), so never evicted; ``seen`` is the monotonic time of its last report, which is
    what eviction reads (``last_activity`` is the wall time the reports carry, which a
    producer's clock decides)."""

    __slots__ = (
        "breaker",
        "cached",
        "client_errors",
        "declared",
        "exported",
        "exported_at",
        "heartbeat",
        "last_activity",
        "last_error",
        "name",
        "read_moves",
        "seen",
        "spans",
        "status",
        "type",
        "views",
        "window",
    )

    def __init__(
        self, name: str, type_: str | None, now: float, bounds: Sequence[float] = LATENCY_BOUNDS
    ) -> None:
        self.name = name
        self.type = type_
        self.window = RollingWindow(now, bounds=bounds)
        self.declared = False
        self.seen = now  # monotonic
        self.status: ComponentRunState = "registered"
        self.last_activity: float | None = None
        self.last_error: str | None = None
        self.client_errors = 0  # 4xx answers: counted, never in the window's errors
        self.heartbeat: float | None = None  # monotonic time of the last heartbeat
        self.breaker: ReportedBreaker | None = None
        self.spans: RollingWindow | None = None  # span durations, once it ends one
        #: Its figures of the default view while they cannot change: what the last read
        #: gave (exported histogram included) once it was idle; every fold clears it.
        self.cached: tuple[ComponentFigures, list[int], float] | None = None
        #: Its lifetime histogram in the exported buckets, and the latency count it was
        #: made at: exported again only once that count moved (two slots, not a tuple:
        #: one object fewer per component for the garbage collector to walk).
        self.exported: list[int] | None = None
        self.exported_at = -1
        #: Its window's views at the last read (``RollingWindow.read_views``): while
        #: nothing enters or leaves them, the next read works out only spans and rates.
        self.views: Views | None = None
        #: Its window's moves (``Views``) when the figures an aggregator keeps for it
        #: were read; -1 once something was folded since (every fold sets it so).
        self.read_moves = -1

    def idle(self, now: float) -> bool:
        """Whether its figures read the same until its next report: nothing in any view
        (nor in its spans'), no heartbeat age to grow."""
        return (
            self.heartbeat is None
            and self.window.idle(now)
            and (self.spans is None or self.spans.idle(now))
        )

    def reread(
        self, now: float, view: ViewSeconds, prev: ComponentFigures
    ) -> ComponentFigures | None:
        """``prev`` (its figures over ``view`` from the read ``read_moves`` names) as of
        ``now``, when nothing was folded since and nothing entered or left its window's
        views: only what moves with the clock is new. None when something did."""
        vs = self.views = self.window.read_views(now, self.views)
        moves, v10, v60, v300 = vs
        if moves != self.read_moves:
            return None
        v = v60 if view == 60 else v10 if view == 10 else v300
        return msgspec.structs.replace(
            prev,
            items_per_second=v.items_per_second,
            windows={"10s": v10, "60s": v60, "300s": v300},
            span_latency=latency_figures(self.spans.view(now, view))
            if self.spans is not None
            else None,
            heartbeat_age_s=now - self.heartbeat if self.heartbeat is not None else None,
        )

    def read(self, now: float, view: ViewSeconds) -> tuple[ComponentFigures, int, float]:
        """Its figures over ``view``, and its lifetime latency count and sum (the count
        tells whether its lifetime histogram moved: it only grows)."""
        w = self.window
        vs = self.views = w.read_views(now, self.views)
        _moves, v10, v60, v300 = vs
        views = {"10s": v10, "60s": v60, "300s": v300}
        v = v60 if view == 60 else v10 if view == 10 else v300
        processed, errors, _m, _b, lcount, lsum = w.totals()
        figures = ComponentFigures(
            items_processed=processed,
            errors_encountered=errors,
            status=self.status,
            last_activity=self.last_activity,
            type=self.type,
            items_per_second=v.items_per_second,
            error_rate=v.error_rate,
            latency=latency_figures(v),
            last_error=self.last_error,
            windows=views,
            span_latency=latency_figures(self.spans.view(now, view))
            if self.spans is not None
            else None,
            heartbeat_age_s=now - self.heartbeat if self.heartbeat is not None else None,
            client_errors=self.client_errors,
        )
        return figures, lcount, lsum


class StreamState:
    """One binding or stream: its message window, and what its ends and queue are.

    ``declared`` and ``seen`` as for a ``ComponentState``: a binding or a transport's
    stream is declared, a stream only named by events is not."""

    __slots__ = (
        "buffer",
        "declared",
        "from_component",
        "lag",
        "seen",
        "stream_name",
        "to_component",
        "window",
    )

    def __init__(
        self,
        now: float,
        from_component: str | None = None,
        to_component: str | None = None,
        stream_name: str | None = None,
        buffer: BufferStats | None = None,
    ) -> None:
        self.window = RollingWindow(now)
        self.declared = False
        self.seen = now  # monotonic
        self.from_component = from_component
        self.to_component = to_component
        self.stream_name = stream_name
        self.buffer = buffer
        self.lag: LagStats | None = None

    def read(self, now: float, view: ViewSeconds) -> tuple[StreamStatus, int, Exception | None]:
        """Its figures over ``view``, the messages in that view, and the exception its
        buffer statistics raised (its level is then unknown, the rest still read)."""
        sv = self.window.view(now, view)
        used = size = None
        failed: Exception | None = None
        if self.buffer is not None:
            try:
                used, size = self.buffer()
            except Exception as exc:  # a binding that went away must not break the page
                failed = exc
        status = StreamStatus(
            total_messages=self.window.totals()[2],
            message_rate=sv.message_rate,
            from_component=self.from_component,
            to_component=self.to_component,
            stream_name=self.stream_name,
            buffer_used=used,
            buffer_size=size,
            consumer_lag=self._consumer_lag(),
        )
        return status, sv.messages, failed

    def _consumer_lag(self) -> int | None:
        if self.lag is None:
            return None
        try:
            return self.lag()
        except Exception:  # a transport that went away must not break the page
            return None


class SpanTable:
    """Spans started and not yet ended (bounded, oldest first) and the distinct trace
    ids seen (bounded the same way), with the counts ``Traces`` shows."""

    __slots__ = (
        "completed",
        "expired",
        "max_spans",
        "spans",
        "total_traces",
        "trace_order",
        "traces",
    )

    def __init__(self, max_spans: int) -> None:
        self.max_spans = max_spans
        self.spans: OrderedDict[tuple[str, str], float] = OrderedDict()
        # The trace ids held, and the order they came in (oldest first): a set and a
        # deque take a batch of ids in C calls, at half an OrderedDict's cost per id.
        self.traces: set[str] = set()
        self.trace_order: deque[str] = deque()
        self.total_traces = 0
        self.completed = 0
        self.expired = 0

    def start(self, ev: Event, now: float) -> None:
        if ev.trace_id is not None and ev.trace_id not in self.traces:
            self._add_traces([ev.trace_id])
        if ev.span_id is not None:
            key = (ev.component, ev.span_id)
            self.spans.pop(key, None)  # a restarted span moves to the back: oldest stays first
            self.spans[key] = now
            if len(self.spans) > self.max_spans:
                self.spans.popitem(last=False)
                self.expired += 1

    def end(self, ev: Event) -> float | None:
        """Counts a span's end; returns when it started, if that is still known."""
        self.completed += 1
        return self.spans.pop((ev.component, ev.span_id), None) if ev.span_id else None

    def ended(self, n: int, trace_ids: list[str]) -> None:
        """Counts ``n`` spans reported complete (an OTLP export) and their traces
        (distinct ids)."""
        self.completed += n
        self._add_traces(list(filterfalse(self.traces.__contains__, trace_ids)))

    def _add_traces(self, fresh: list[str]) -> None:
        """Hold the trace ids ``fresh`` (distinct, none held), dropping the oldest held
        beyond the bound: what adding them one at a time would leave."""
        self.total_traces += len(fresh)
        self.traces.update(fresh)
        order = self.trace_order
        order.extend(fresh)
        drop = self.traces.discard
        while len(order) > self.max_spans:
            drop(order.popleft())

    def expire(self, limit: float) -> None:
        """Gives up on the spans started before ``limit`` (monotonic)."""
        spans = self.spans
        while spans:
            key, started = next(iter(spans.items()))
            if started >= limit:
                break
            del spans[key]
            self.expired += 1

    def figures(self) -> Traces:
        return Traces(
            total_traces=self.total_traces,
            active_spans=len(self.spans),
            completed_spans=self.completed,
            expired_spans=self.expired,
        )
