"""Folds events and probe deltas into per-component, per-stream and system windows,
and reads them as the ``Figures`` of one instant.

Figures only: whether those figures are healthy, and which alerts they raise, is judged
afterwards, once per snapshot (``streammetrics.judge``).

State is bounded: one ``RollingWindow`` per component and per stream, at most
``max_components`` components (an event from one more is rejected with reason
``cardinality`` and counted, never silently dropped), and a bounded table of open
spans (``aggregates``). Nothing here grows with the number of events.

Nor with the number of names ever seen: with ``component_ttl_s``, a component or stream
that only events made known (not the blueprint, not code) and that has reported nothing
for that long is evicted on the next figures read, and counted (``_sweep``).
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Sequence
from operator import add
from typing import Any, Protocol, TypeVar

import msgspec

from .aggregates import (
    BufferStats,
    ComponentState,
    LagStats,
    ReportedBreaker,
    SpanTable,
    StreamState,
    latency_figures,
)
from .breaker import BREAKER_CODES
from .buckets import DEFAULT_HISTOGRAM_BUCKETS, DEFAULT_LADDER, Ladder
from .model.events import Delta, Event, Rejection
from .model.spans import SpanDelta
from .model.types import describe_exception
from .snapshot import (
    BreakerStatus,
    ComponentFigures,
    Figures,
    Performance,
    ProcessStats,
    Streaming,
    StreamStatus,
)
from .steps import Steps, finish, finish_async
from .windows import RollingWindow, ViewSeconds

__all__ = ("Aggregator", "AggregatorStatistics")


class AggregatorStatistics(msgspec.Struct, frozen=True):
    components: int
    streams: int
    events_folded: int
    deltas_folded: int
    rejected: dict[str, int]
    active_spans: int
    components_evicted: int = 0
    streams_evicted: int = 0


class _Evictable(Protocol):
    declared: bool
    seen: float


_E = TypeVar("_E", bound=_Evictable)


def _sweep(heap: list[tuple[float, str]], table: dict[str, _E], cutoff: float) -> int:
    """Evicts the undeclared entries of ``table`` seen last before ``cutoff``; returns
    how many.

    ``heap`` holds one (time, key) per undeclared entry, the time never later than the
    entry's ``seen``: the folds only store ``seen`` (no reordering per report), and an
    entry that was active meanwhile is pushed back with its newer time when it comes up.
    So a sweep costs O((evicted + pushed back) log n), and an entry comes up at most once
    per TTL while it stays active, however many entries are idle or busy.
    """
    evicted = 0
    while heap and heap[0][0] < cutoff:
        _, key = heapq.heappop(heap)
        entry = table.get(key)
        if entry is None or entry.declared:
            continue
        if entry.seen < cutoff:
            del table[key]
            evicted += 1
        else:
            heapq.heappush(heap, (entry.seen, key))
    return evicted


class Aggregator:
    """The rolling aggregates of one MetricsEndpoint.

    ``clock`` is monotonic seconds (windows, rates), ``wall`` unix seconds (only for what
    responses show); tests pass their own. ``view`` is the default window of the figures
    (the one health is judged over). ``component_ttl_s``: evict what only events made
    known after that long without a report (0, the default here: keep everything).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_components: int = 10_000,
        max_streams: int = 10_000,
        max_spans: int = 100_000,
        span_timeout_s: float = 300.0,
        observe: Collection[str] | None = None,
        view: ViewSeconds = 60,
        component_ttl_s: float = 0.0,
        ladder: Ladder | None = None,
        histogram_buckets: Sequence[float] | None = None,
    ) -> None:
        """``ladder``: the latency buckets it counts in, its bus's (probe deltas come
        bucketed in it; ``DEFAULT_LADDER`` unless the buckets need another);
        ``histogram_buckets``: the boundaries its figures' histograms are exported in
        (each must be a bound of the ladder; prometheus-client's defaults when None)."""
        if histogram_buckets is None:
            histogram_buckets = DEFAULT_HISTOGRAM_BUCKETS
        if ladder is None:
            ladder = (
                DEFAULT_LADDER
                if DEFAULT_LADDER.covers(histogram_buckets)
                else Ladder([histogram_buckets])
            )
        #: The latency buckets folded into (``buckets.Ladder``).
        self.ladder = ladder
        #: The boundaries of ``Figures.component_histograms`` (``+Inf`` after the last).
        self.histogram_buckets: tuple[float, ...] = tuple(float(b) for b in histogram_buckets)
        self._export = ladder.exporter(self.histogram_buckets)
        self.clock = clock
        self.wall = wall
        self.view: ViewSeconds = view
        self.max_components = max_components
        self.max_streams = max_streams
        self.span_timeout_s = span_timeout_s
        self.component_ttl_s = component_ttl_s
        self._observe = frozenset(observe) if observe is not None else None
        now = clock()
        self._started_mono = now
        self._system = RollingWindow(now, bounds=ladder.bounds)
        self._components: dict[str, ComponentState] = {}
        self._streams: dict[str, StreamState] = {}
        self._spans = SpanTable(max_spans)
        self._events = 0
        self._deltas = 0
        self._rejected: dict[str, int] = {}
        # The undeclared components and streams, for _sweep (empty without a TTL).
        self._idle_components: list[tuple[float, str]] = []
        self._idle_streams: list[tuple[float, str]] = []
        self._components_evicted = 0
        self._streams_evicted = 0

    # -- registration ----------------------------------------------------------------------

    def register_component(
        self, name: str, type_: str | None = None, *, breaker: bool = False
    ) -> None:
        """Make a component known before its first event (a blueprint's components).

        ``breaker``: it runs behind a circuit breaker, listed (closed) before its first
        transition. Components without one are left out of ``circuit_breakers``: showing
        them "closed" would claim a protection they do not have. A component also gets a
        breaker with its first ``breaker`` event (one reported from another process).
        """
        c = self._components.get(name)
        if c is None:
            c = self._components[name] = ComponentState(
                name, type_, self.clock(), self.ladder.bounds
            )
        elif type_ is not None:
            c.type = type_
        c.declared = True
        if breaker and c.breaker is None:
            c.breaker = ReportedBreaker()
        c.cached = None

    def register_stream(
        self,
        key: str,
        *,
        from_component: str | None = None,
        to_component: str | None = None,
        stream_name: str | None = None,
        buffer: BufferStats | None = None,
        lag: LagStats | None = None,
    ) -> None:
        """Make a binding known; ``buffer`` reports (used, size) of its queue, ``lag``
        the backlog of a transport's consumer (entries not yet read), or None."""
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = StreamState(
                self.clock(), from_component, to_component, stream_name, buffer
            )
        else:
            s.from_component, s.to_component = from_component, to_component
            s.stream_name, s.buffer = stream_name, buffer
        s.lag = lag
        s.declared = True

    def observes(self, component: str) -> bool:
        return self._observe is None or component in self._observe

    def reject(self, reason: str, n: int = 1) -> None:
        """Count ``n`` reports that could not be folded (a transport's malformed bodies)."""
        self._rejected[reason] = self._rejected.get(reason, 0) + n

    def _component(self, name: str, now: float, *, declared: bool = False) -> ComponentState | None:
        """``name``'s state, made on its first report; None at ``max_components`` (after
        evicting what is due: a full table may have room the next tick would make)."""
        c = self._components.get(name)
        if c is None:
            if len(self._components) >= self.max_components:
                self._evict(now)
                if len(self._components) >= self.max_components:
                    return None
            c = self._components[name] = ComponentState(name, None, now, self.ladder.bounds)
            if declared:
                c.declared = True
            elif self.component_ttl_s:
                heapq.heappush(self._idle_components, (now, name))
        return c

    def _stream(self, key: str, now: float, *, declared: bool = False) -> StreamState | None:
        s = self._streams.get(key)
        if s is None:
            if len(self._streams) >= self.max_streams:
                self._evict(now)
                if len(self._streams) >= self.max_streams:
                    return None
            s = self._streams[key] = StreamState(now, stream_name=key)
            if declared:
                s.declared = True
            elif self.component_ttl_s:
                heapq.heappush(self._idle_streams, (now, key))
        return s

    def _evict(self, now: float) -> None:
        """Evict the undeclared components and streams silent for over ``component_ttl_s``
        (their figures, series and alert instances go with them)."""
        ttl = self.component_ttl_s
        if ttl:
            cutoff = now - ttl
            self._components_evicted += _sweep(self._idle_components, self._components, cutoff)
            self._streams_evicted += _sweep(self._idle_streams, self._streams, cutoff)

    # -- folding ---------------------------------------------------------------------------

    def fold_events(self, events: Sequence[Event]) -> list[Rejection]:
        """Fold events; returns the ones that could not be (and counts them by reason).

        Every event of one call shares one arrival time (one clock read), so the counts and
        latencies of ``processed`` and ``error`` events are summed per component first and
        folded into the windows once per component at the end: per event that is a few
        adds and one ``bisect``, not two window updates.
        """
        now = self.clock()
        wall = self.wall()
        rejected: list[Rejection] = []
        system = self._system
        observe = self._observe
        components = self._components
        # per component: [processed, errors, bytes, latency_sum, first bucket, histogram, c,
        # smallest latency, largest latency] (the extremes the quantiles are clamped to)
        acc: dict[str, list[Any]] = {}
        sys_lsum = 0.0
        sys_msgs = 0
        skipped = 0
        bisect, bounds = bisect_left, self.ladder.bounds
        nbuckets = self.ladder.nbuckets
        for i, ev in enumerate(events):
            name = ev.component
            if observe is not None and name not in observe:
                skipped += 1
                continue
            kind = ev.kind
            a = acc.get(name)
            if a is not None:
                c = a[6]
            else:
                c = components.get(name)
                if c is None:
                    c = self._component(name, now)
                if c is None:
                    skipped += 1
                    self.reject("cardinality")
                    rejected.append(
                        Rejection(
                            i,
                            f"events[{i}].component",
                            f"component limit {self.max_components} reached; "
                            f"{name!r} not registered",
                        )
                    )
                    continue
                c.seen = now  # once per component and batch for processed/error events
                c.cached = None
            ts = ev.timestamp
            c.last_activity = ts if ts is not None else wall
            if kind == "processed" or kind == "error":
                if a is None:
                    a = acc[name] = [0, 0, 0, 0.0, None, None, c, math.inf, -math.inf]
                    # Only a first processed/error moves a component out of "registered"
                    # (nothing moves one back), so once per component and batch is enough.
                    if c.status == "registered":
                        c.status = "running"
                if kind == "processed":
                    a[0] += ev.count
                else:
                    a[1] += ev.count
                    if ev.detail is not None:
                        c.last_error = ev.detail
                if ev.bytes:
                    a[2] += ev.bytes
                latency = ev.latency
                if latency is not None:
                    k = bisect(bounds, latency)
                    sys_lsum += latency
                    a[3] += latency
                    if latency < a[7]:
                        a[7] = latency
                    if latency > a[8]:
                        a[8] = latency
                    h = a[5]
                    if h is not None:
                        h[k] += 1
                    elif a[4] is None:
                        a[4] = k  # one latency so far: no histogram yet
                    else:
                        h = a[5] = [0] * nbuckets
                        h[a[4]] += 1
                        h[k] += 1
            elif kind == "started":
                c.status = "running"
            elif kind == "stopped":
                c.status = "failed" if ev.detail == "failed" else "stopped"
            elif kind == "heartbeat":
                c.heartbeat = now
                if c.status in ("registered", "stopped"):
                    c.status = "running"
            elif kind == "breaker":
                if ev.detail not in BREAKER_CODES:
                    self.reject("malformed")
                    rejected.append(
                        Rejection(
                            i,
                            f"events[{i}].detail",
                            f"a breaker event's detail is closed, open or half_open, "
                            f"got {ev.detail!r}",
                        )
                    )
                    continue
                b = c.breaker
                if b is None:
                    b = c.breaker = ReportedBreaker()
                b.move_to(ev.detail, now, wall)
            elif kind == "span_start":
                self._spans.start(ev, now)
            else:  # span_end
                self._span_end(c, ev, now)
            if ev.stream is not None and kind in ("processed", "error"):
                s = self._stream(ev.stream, now)
                if s is None:
                    self.reject("cardinality")
                else:
                    s.seen = now
                    s.window.add(now, 0, 0, ev.count, ev.bytes)
                sys_msgs += ev.count  # as fold_deltas does for probe messages
        self._events += len(events) - skipped
        if acc or sys_msgs:
            processed = errors = nbytes = 0
            sys_hist: list[int] | None = None
            sys_lo, sys_hi = math.inf, -math.inf
            for p, e, b, lsum, first, h, c, lo, hi in acc.values():
                processed += p
                errors += e
                nbytes += b
                w = c.window
                w.add(now, p, e, 0, b)
                if lo < sys_lo:
                    sys_lo = lo
                if hi > sys_hi:
                    sys_hi = hi
                if h is not None:
                    w.add_histogram(now, h, lsum, lo, hi)
                    sys_hist = list(map(add, sys_hist, h)) if sys_hist is not None else list(h)
                elif first is not None:
                    w.add_bucket(now, first, lsum)
                    if sys_hist is None:
                        sys_hist = [0] * nbuckets
                    sys_hist[first] += 1
            system.add(now, processed, errors, sys_msgs, nbytes)
            if sys_hist is not None:
                system.add_histogram(now, sys_hist, sys_lsum, sys_lo, sys_hi)
        return rejected

    def fold_deltas(self, deltas: Sequence[Delta]) -> None:
        """Fold probe deltas: per delta O(histogram buckets), whatever it counted."""
        now = self.clock()
        wall = self.wall()
        system = self._system
        for d in deltas:
            if self._observe is not None and d.component not in self._observe:
                continue
            # A probe is made by code: what it reports is declared, never evicted.
            c = self._component(d.component, now, declared=True)
            if c is None:
                self.reject("cardinality")
                continue
            self._deltas += 1
            c.declared = True
            c.cached = None
            c.last_activity = wall
            if c.status == "registered":
                c.status = "running"
            if d.stream is not None:
                s = self._stream(d.stream, now, declared=True)
                if s is None:
                    self.reject("cardinality")
                else:
                    s.declared = True
                    s.window.add(now, 0, 0, d.messages, d.bytes)
                system.add(now, 0, 0, d.messages, 0)
                continue
            c.window.add(now, d.processed, d.errors, d.messages, d.bytes)
            system.add(now, d.processed, d.errors, d.messages, d.bytes)
            if d.latency_counts is not None:
                c.window.add_histogram(now, d.latency_counts, d.latency_sum)
                system.add_histogram(now, d.latency_counts, d.latency_sum)
            if d.last_error is not None:
                c.last_error = d.last_error
            if d.client_errors:
                c.client_errors += d.client_errors

    def fold_spans(self, deltas: Sequence[SpanDelta]) -> list[int]:
        """Fold finished spans summed per component (an OTLP export): their items as
        ``fold_deltas`` folds a probe's, every span into ``traces`` and the component's
        span latency. Returns the indexes of the deltas refused by the component limit,
        counted as ``cardinality`` once per span."""
        now = self.clock()
        refused: list[int] = []
        items: list[Delta] = []
        for i, d in enumerate(deltas):
            if not self.observes(d.items.component):
                continue
            c = self._component(d.items.component, now)
            if c is None:
                self.reject("cardinality", d.spans)
                refused.append(i)
                continue
            items.append(d.items)
            if c.spans is None:
                c.spans = RollingWindow(now, bounds=self.ladder.bounds)
            c.spans.add_histogram(now, d.span_counts, d.span_sum)
            self._spans.ended(d.spans, d.trace_ids)
        self.fold_deltas(items)
        return refused

    def _span_end(self, c: ComponentState, ev: Event, now: float) -> None:
        started = self._spans.end(ev)
        latency = (
            ev.latency
            if ev.latency is not None
            else (now - started if started is not None else None)
        )
        if latency is not None:
            c.window.add(now, latency=latency)
            self._system.add(now, latency=latency)
            if c.spans is None:
                c.spans = RollingWindow(now, bounds=self.ladder.bounds)
            c.spans.add(now, latency=latency)

    # -- reading ---------------------------------------------------------------------------

    def statistics(self) -> AggregatorStatistics:
        return AggregatorStatistics(
            components=len(self._components),
            streams=len(self._streams),
            events_folded=self._events,
            deltas_folded=self._deltas,
            rejected=dict(self._rejected),
            active_spans=len(self._spans.spans),
            components_evicted=self._components_evicted,
            streams_evicted=self._streams_evicted,
        )

    def figures(
        self,
        process: ProcessStats | None = None,
        errors: Sequence[str] = (),
        view: ViewSeconds | None = None,
    ) -> Figures:
        """The figures as of now. Cost grows with components and streams, not events."""
        return finish(self._figures_steps(process, errors, view, chunk=0))

    async def figures_async(
        self,
        process: ProcessStats | None = None,
        errors: Sequence[str] = (),
        view: ViewSeconds | None = None,
        *,
        chunk: int = 256,
    ) -> Figures:
        """``figures()`` that lets the event loop run every ``chunk`` components.

        The aggregates are folded on the loop, so they cannot be read in a worker
        thread; with 10,000 components one read is ~170 ms, long enough to stall every
        request behind it. Each component's figures are still read in one piece; a fold
        that lands between two chunks shows in the components not read yet.
        """
        return await finish_async(self._figures_steps(process, errors, view, chunk=chunk))

    def _figures_steps(
        self,
        process: ProcessStats | None,
        errors: Sequence[str],
        view: ViewSeconds | None,
        *,
        chunk: int,
    ) -> Steps[Figures]:
        """Reads the figures, yielding every ``chunk`` components (never when 0)."""
        view = view or self.view
        now = self.clock()
        wall = self.wall()
        process = process or ProcessStats()
        self._spans.expire(now - self.span_timeout_s)
        self._evict(now)
        streams: dict[str, StreamStatus] = {}
        total_messages = 0
        message_rate = 0.0
        active = 0
        for key, s in self._streams.items():
            st, in_view, failed = s.read(now, view)
            if failed is not None:
                errors = [
                    *errors,
                    f"stream {key}: buffer statistics failed: {describe_exception(failed)}",
                ]
            streams[key] = st
            total_messages += st.total_messages
            message_rate += st.message_rate
            active += in_view > 0 or s.buffer is not None
        details: dict[str, ComponentFigures] = {}
        breakers: dict[str, BreakerStatus] = {}
        histograms: dict[str, list[int]] = {}
        sums: dict[str, float] = {}
        export = self._export
        default = self.view
        for i, (name, c) in enumerate(list(self._components.items())):
            if chunk and i and i % chunk == 0:
                yield
            got = c.cached if view == default else None
            if got is None:
                figs, hist, lsum = c.read(now, view)
                got = (figs, export(hist), lsum)
                if view == default and c.idle(now):
                    c.cached = got
            details[name], histograms[name], sums[name] = got
            if c.breaker is not None:
                breakers[name] = c.breaker.status(now)
        sv = self._system.view(now, view)
        return Figures(
            timestamp=wall,
            uptime_seconds=now - self._started_mono,
            detailed_components=details,
            circuit_breakers=breakers,
            streaming=Streaming(
                active_streams=active,
                total_messages=total_messages,
                message_rate=message_rate,
                streams=streams,
            ),
            performance=Performance(
                error_rate=sv.error_rate,
                memory_usage_mb=process.memory_usage_mb,
                cpu_usage_percent=process.cpu_usage_percent,
                items_per_second=sv.items_per_second,
                message_rate=sv.message_rate,
                latency=latency_figures(sv),
                window_seconds=view,
            ),
            traces=self._spans.figures(),
            rejected=dict(self._rejected),
            errors=list(errors),
            total_histogram=export(self._system.total_histogram()),
            component_histograms=histograms,
            latency_sums=sums,
            histogram_buckets=self.histogram_buckets,
            components_evicted=self._components_evicted,
            streams_evicted=self._streams_evicted,
        )
