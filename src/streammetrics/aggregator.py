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
import itertools
import math
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Sequence
from operator import add, length_hint
from typing import Any, Final, Protocol, TypeVar

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
from .buckets import (
    DEFAULT_HISTOGRAM_BUCKETS,
    DEFAULT_LADDER,
    Ladder,
    bucket_latencies,
    bucketed_extremes,
)
from .model.events import Delta, Event, Rejection
from .model.spans import SpanDelta
from .model.types import describe_exception
from .snapshot import (
    ComponentFigures,
    ComponentTable,
    Figures,
    Performance,
    ProcessStats,
    Streaming,
    StreamStatus,
)
from .steps import BUDGET_S, NEVER, Pace, Steps, finish, finish_async
from .windows import RollingWindow, ViewSeconds

__all__ = ("Aggregator", "AggregatorStatistics")

#: The kind the plain event loop of ``fold_events`` takes, compared by identity: msgspec
#: decodes a ``Literal`` to the very string of the annotation (interned, as this one is);
#: an equal string that is another object (made by code) is folded the same, one step on.
_PROCESSED: Final = "processed"

#: The windows' slot, in seconds (``RollingWindow``'s default resolution, which every
#: window of the aggregator has): latencies held for bucketing stay in the slot they
#: arrived in as long as they are bucketed before a fold or read in another slot.
_SLOT_S: Final = 1.0
#: The most latencies one component holds before they are bucketed (a sort and one
#: bisect per bound in their range: past a few hundred, the bisects' share is small).
_HOLD_EACH: Final = 256
#: The most latencies held in all: a read buckets them first, in one step that does not
#: let the event loop run, so they must stay about a millisecond of work (1.2 to 1.4 ms
#: measured at 2,048 on this 2-core machine: five or so of the read's steps of a quarter
#: of a millisecond, ``steps.BUDGET_S``, far under the 10 ms a request may wait behind a
#: tick).
_HOLD_ALL: Final = 2048
#: The most components holding latencies: past them, a component's latencies are bucketed
#: at the end of its fold, as they come (a list kept per component and slot is what a
#: full collection walks, and a read buckets each component that holds).
_HOLD_COMPONENTS: Final = 64


class AggregatorStatistics(msgspec.Struct, frozen=True):
    components: int
    streams: int
    events_folded: int
    deltas_folded: int
    rejected: dict[str, int]
    active_spans: int
    components_evicted: int = 0
    streams_evicted: int = 0


_Tables = tuple[dict[str, ComponentFigures], dict[str, list[int]], dict[str, float]]
"""A read's per-component figures, exported histograms and latency sums."""


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
        # What a read of the default view must read anew: the components changed since
        # their figures were last kept (``ComponentState.cached``), or not quiet yet. The
        # others' figures are those of the last read (``_last``), the same objects.
        self._dirty: dict[str, ComponentState] = {}
        self._last: _Tables | None = None
        self._last_read = 0  # the number (ComponentTable.read) of the read ``_last`` holds
        # The components with a breaker, in table order (None: to be listed again).
        self._breakered: dict[str, ComponentState] | None = None
        # The read under way (between its steps), which a fold must let read first.
        self._reading: _Read | None = None
        self._reads = 0  # reads begun
        # Latencies folded but not bucketed yet (``settle``), per component: all of the
        # slot ``_held_slot``, folded at ``_held_now`` (the first fold of that slot),
        # ``_held_n`` in all. The counts of their events are in the windows already.
        self._held: dict[ComponentState, list[float]] = {}
        self._held_slot = -math.inf
        self._held_now = now
        self._held_n = 0

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
        else:
            self._touch(c)
            if type_ is not None:
                c.type = type_
        c.declared = True
        if breaker and c.breaker is None:
            c.breaker = ReportedBreaker()
            self._breakered = None
        c.cached = None
        self._dirty[name] = c

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

    def _touch(self, c: ComponentState) -> None:
        """``c`` is about to change: a read under way that has still to read it reads it
        first, as it was at the read's instant; its kept figures are dropped."""
        if self._reading is not None:
            self._reading.before_change(c)
        c.cached = None
        c.read_moves = -1
        self._dirty[c.name] = c

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
            self._dirty[name] = c
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
            evicted = _sweep(self._idle_components, self._components, cutoff)
            self._streams_evicted += _sweep(self._idle_streams, self._streams, cutoff)
            if evicted:
                self._components_evicted += evicted
                # The table is no longer what the last read saw: the next one reads it whole.
                self._last = self._breakered = None
                components = self._components
                self._dirty = {n: c for n, c in self._dirty.items() if n in components}

    # -- folding ---------------------------------------------------------------------------

    def fold_events(self, events: Sequence[Event]) -> list[Rejection]:
        """Fold events; returns the ones that could not be (and counts them by reason).

        Every event of one call shares one arrival time (one clock read), so what the
        ``processed`` and ``error`` events carry is summed per component (and per stream)
        first and folded into the windows once per component at the end, latencies
        bucketed there in bulk (``buckets.bucket_latencies``). The plain event (processed,
        count 1, a latency, no bytes, no stream, from a component already met in this
        call) takes a loop of its own that keeps its latency and timestamp and nothing
        else: its count is how many latencies that loop appended, known at the end. The
        other common events (an error without detail; a count, bytes, a stream or no
        latency) leave it to be summed with a few adds, then go back to it; every other
        event takes the full handling below, then the loop goes on from the next event,
        so the order of the events is kept.
        """
        now = self.clock()
        wall = self.wall()
        self._settle_before(now)
        held = self._held
        rejected: list[Rejection] = []
        system = self._system
        observe = self._observe
        components = self._components
        dirty = self._dirty
        reading = self._reading
        # per component: [processed, errors, bytes, its held latencies, state, its last
        # timestamp, how many of the latencies the plain loop did not append (those it
        # held before this call included), how many it held before (-1: not held)]
        acc: dict[str, list[Any]] = {}
        met = acc.get  # bound once: the plain loop below looks up every event's component
        # per stream: [messages, bytes, state]
        sacc: dict[str, list[Any]] = {}
        refused_msgs = 0  # of events whose stream is past max_streams
        skipped = 0
        seq = events if isinstance(events, list | tuple) else list(events)
        n = len(seq)
        it = iter(seq)
        while True:
            # The plain event: processed, count 1, a latency, no bytes, no stream, from a
            # component met in this call. Only its latency is kept (and its timestamp,
            # the component's last); its count is the number of latencies appended here,
            # ``len(a[3]) - a[6]``, worked out once per component at the end.
            for ev in it:
                a = met(ev.component)
                if (
                    a is None
                    or ev.kind is not _PROCESSED  # the decoder's own string; else below
                    or ev.count != 1
                    or ev.bytes
                    or ev.stream is not None
                    or (latency := ev.latency) is None
                ):
                    break
                a[5] = ev.timestamp
                a[3].append(latency)
            else:
                break
            # ev is not plain. The common event (processed, or an error without detail,
            # from a component met in this call) is summed here, then back to the loop;
            # any other is handled in full, at index n - length_hint(it) - 1 (the
            # iterator stops right after it).
            name = ev.component
            if a is not None:
                kind = ev.kind
                if kind == "processed" or (kind == "error" and ev.detail is None):
                    if kind == "processed":
                        a[0] += ev.count
                    else:
                        a[1] += ev.count
                    a[5] = ev.timestamp
                    if ev.bytes:
                        a[2] += ev.bytes
                    latency = ev.latency
                    if latency is not None:
                        a[3].append(latency)
                        a[6] += 1
                    if ev.stream is not None:
                        sa = sacc.get(ev.stream)
                        if sa is None:  # its stream is made known there
                            refused_msgs += self._sum_stream(sacc, ev, now)
                        else:
                            sa[0] += ev.count
                            sa[1] += ev.bytes
                    continue
                c = a[4]
            else:
                if observe is not None and name not in observe:
                    skipped += 1
                    continue
                c = components.get(name)
                if c is None:
                    c = self._component(name, now)
                if c is None:
                    skipped += 1
                    self.reject("cardinality")
                    i = n - length_hint(it) - 1
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
                if reading is not None:
                    reading.before_change(c)
                c.cached = None
                c.read_moves = -1
                dirty[name] = c
                kind = ev.kind
            ts = ev.timestamp
            c.last_activity = ts if ts is not None else wall
            if a is not None:
                a[5] = ts  # what the component's last_activity is set from at the end
            if kind == "processed" or kind == "error":
                if a is None:
                    lats = held.get(c)
                    if lats is not None:
                        before = len(lats)
                    else:
                        lats, before = [], -1
                        if len(held) < _HOLD_COMPONENTS:
                            held[c], before = lats, 0
                    a = acc[name] = [0, 0, 0, lats, c, ts, max(before, 0), before]
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
                if ev.latency is not None:
                    a[3].append(ev.latency)
                    a[6] += 1
                if ev.stream is not None:
                    refused_msgs += self._sum_stream(sacc, ev, now)
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
                    i = n - length_hint(it) - 1
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
                    self._breakered = None
                b.move_to(ev.detail, now, wall)
            elif kind == "span_start":
                self._spans.start(ev, now)
            else:  # span_end
                self._span_end(c, ev, now)
        self._events += n - skipped
        sys_msgs = refused_msgs  # a refused stream's messages count in the system's, as
        for msgs, nb, st in sacc.values():  # fold_deltas counts a probe's
            st.window.add(now, 0, 0, msgs, nb)
            sys_msgs += msgs
        if acc or sys_msgs:
            processed = errors = nbytes = 0
            due: list[tuple[ComponentState, list[float]]] = []  # to bucket now
            for p, e, nb, lats, c, ts, others, before in acc.values():
                c.last_activity = ts if ts is not None else wall
                p += len(lats) - others  # the plain events'
                processed += p
                errors += e
                nbytes += nb
                c.window.add(now, p, e, 0, nb)
                if before < 0:  # not held
                    due.append((c, lats))
                elif len(lats) >= _HOLD_EACH:
                    self._held_n -= before
                    due.append((c, held.pop(c)))
                else:
                    self._held_n += len(lats) - before
            system.add(now, processed, errors, sys_msgs, nbytes)
            if due:
                self._bucket(due, now)
            if self._held_n >= _HOLD_ALL:
                self.settle()
        return rejected

    def _bucket(self, held: Iterable[tuple[ComponentState, list[float]]], now: float) -> None:
        """Fold latencies into the windows of the components that held them and into the
        system's, bucketed in bulk per component (``buckets.bucket_latencies``) and summed
        into one system histogram, at ``now`` (the slot they arrived in)."""
        bounds = self.ladder.bounds
        sys_hist: list[int] | None = None
        sys_lsum = 0.0
        sys_lo, sys_hi = math.inf, -math.inf  # the extremes the quantiles are clamped to
        for c, lats in held:
            if not lats:
                continue
            if sys_hist is None:
                sys_hist = [0] * self.ladder.nbuckets
            w = c.window
            if len(lats) == 1:  # one latency (a component that reports rarely)
                lsum = lo = hi = lats[0]
                k = bisect_left(bounds, lsum)
                w.add_bucket(now, k, lsum)
                sys_hist[k] += 1
            else:
                first, counts, lsum = bucket_latencies(lats, bounds)
                lo, hi = bucketed_extremes(lats, lsum)  # a NaN (code skips validation) left out
                w.add_counts(now, first, counts, lsum, lo, hi)
                last = first + len(counts)
                sys_hist[first:last] = map(add, sys_hist[first:last], counts)
            sys_lsum += lsum
            if lo < sys_lo:
                sys_lo = lo
            if hi > sys_hi:
                sys_hi = hi
        if sys_hist is not None:
            self._system.add_counts(now, 0, sys_hist, sys_lsum, sys_lo, sys_hi)

    def _settle_before(self, now: float) -> None:
        """A fold at ``now``: if it is in another slot than what is held, bucket that
        first (held latencies stay in the slot they came in), and what is held from here
        on is of ``now``'s slot."""
        slot = now // _SLOT_S
        if slot != self._held_slot:
            self.settle()
            self._held_slot, self._held_now = slot, now

    def settle(self) -> None:
        """Bucket every latency held into the windows now.

        ``fold_events`` holds a batch's latencies until its slot ends, a read, or too
        many are held, so that they cost a share of one sort and one bisect per bound
        per component and slot, not per batch. Reads and folds settle by themselves when
        they need to; a benchmark that times folding calls it, to time all the work its
        folds caused.
        """
        held = self._held
        if held:
            self._held = {}
            self._held_n = 0
            self._bucket(held.items(), self._held_now)

    def _sum_stream(self, sacc: dict[str, list[Any]], ev: Event, now: float) -> int:
        """Sum a processed or error event's messages into its stream's ``sacc`` entry,
        made (with the stream) at its first event of the call. An event whose stream is
        past ``max_streams`` counts as a ``cardinality`` rejection (its component's counts
        still fold); returns its messages then (0 otherwise), for the system's count."""
        key = ev.stream
        if key is None:  # pragma: no cover - called for events with a stream only
            return 0
        sa = sacc.get(key)
        if sa is None:
            s = self._stream(key, now)
            if s is None:
                self.reject("cardinality")
                return ev.count
            s.seen = now
            sa = sacc[key] = [0, 0, s]
        sa[0] += ev.count
        sa[1] += ev.bytes
        return 0

    def fold_deltas(self, deltas: Sequence[Delta], *, declared: bool = True) -> None:
        """Fold probe deltas: per delta O(histogram buckets), whatever it counted.

        ``declared``: a probe is made by code, so what it reports is declared and never
        evicted; deltas summed from another process's reports (an OTLP export) pass
        False, and their components go after ``component_ttl_s`` without one, as the
        components events made known do."""
        now = self.clock()
        wall = self.wall()
        self._settle_before(now)
        system = self._system
        for d in deltas:
            if self._observe is not None and d.component not in self._observe:
                continue
            c = self._component(d.component, now, declared=declared)
            if c is None:
                self.reject("cardinality")
                continue
            self._deltas += 1
            if declared:
                c.declared = True
            else:
                c.seen = now
            self._touch(c)
            c.last_activity = wall
            if c.status == "registered":
                c.status = "running"
            if d.stream is not None:
                s = self._stream(d.stream, now, declared=declared)
                if s is None:
                    self.reject("cardinality")
                else:
                    if declared:
                        s.declared = True
                    else:
                        s.seen = now
                    s.window.add(now, 0, 0, d.messages, d.bytes)
                system.add(now, 0, 0, d.messages, 0)
                continue
            c.window.add(now, d.processed, d.errors, d.messages, d.bytes)
            system.add(now, d.processed, d.errors, d.messages, d.bytes)
            if d.latency_counts is not None:
                lo, hi = d.latency_min, d.latency_max
                c.window.add_histogram(now, d.latency_counts, d.latency_sum, lo, hi)
                system.add_histogram(now, d.latency_counts, d.latency_sum, lo, hi)
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
            self._touch(c)
            if c.spans is None:
                c.spans = RollingWindow(now, bounds=self.ladder.bounds)
            c.spans.add_histogram(now, d.span_counts, d.span_sum)
            self._spans.ended(d.spans, d.trace_ids)
        # Another process's reports: its services are evicted when silent, as events' are.
        self.fold_deltas(items, declared=False)
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
        """The figures as of now. Cost grows with the components that changed (and with
        streams), not with events."""
        return finish(self._figures_steps(process, errors, view, NEVER))

    async def figures_async(
        self,
        process: ProcessStats | None = None,
        errors: Sequence[str] = (),
        view: ViewSeconds | None = None,
        *,
        chunk: int = 256,
        budget_s: float | None = BUDGET_S,
        pace: Pace | None = None,
    ) -> Figures:
        """``figures()`` that lets the event loop run every ``chunk`` components, and
        sooner once it has held the loop ``budget_s`` (``pace``: one shared with the walks
        after it, instead of these two).

        The aggregates are folded on the loop, so they cannot be read in a worker
        thread, and 10,000 changed components take long enough to stall every request
        behind them. The figures are still those of one instant: a fold that lands
        between two steps into a component not read yet has it read first, as it was.
        """
        pace = pace or Pace(chunk, budget_s)
        return await finish_async(self._figures_steps(process, errors, view, pace), pace)

    def _figures_steps(
        self,
        process: ProcessStats | None,
        errors: Sequence[str],
        view: ViewSeconds | None,
        pace: Pace,
    ) -> Steps[Figures]:
        """Reads the figures, yielding where ``pace`` says.

        Of the default view only the components in ``_dirty`` are read; the others'
        figures are the last read's. Everything that is not per component (streams,
        the system's window, spans, breakers) is read before the first yield, and
        ``_reading`` makes a fold read a component it is about to change first: so the
        figures are all of the instant ``now``, however the folds and steps interleave.
        """
        view = view or self.view
        self.settle()  # what is held is read too
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
        breakered = self._breakered
        if breakered is None:
            breakered = self._breakered = {
                n: c for n, c in self._components.items() if c.breaker is not None
            }
        breakers = {n: c.breaker.status(now) for n, c in breakered.items() if c.breaker}
        sv = self._system.view(now, view)
        total_histogram = self._export(self._system.total_counts())
        traces = self._spans.figures()
        rejected = dict(self._rejected)
        evicted = self._components_evicted
        default = view == self.view
        last = self._last if default else None
        order: list[tuple[str, ComponentState]]
        details = ComponentTable()
        histograms: dict[str, list[int]] = {}
        sums: dict[str, float] = {}
        token, changed = next(_READ_NUMBERS), None
        if last is not None:
            self._last = None
            order = list(self._dirty.items())
            changed = (self._last_read, [name for name, _c in order])
        else:
            order = list(self._components.items())
        reading = _Read(self, now, view, {name for name, _c in order})
        previous, self._reading = self._reading, reading
        self._reads += 1
        started = self._reads
        try:
            if last is not None:
                # Copies (dict's own copy: a fraction of a millisecond for 10,000), and
                # the last read's dicts let go of here: what a changed component's new
                # figures replace is then freed as each is read, not all at once.
                details, histograms, sums = ComponentTable(last[0]), dict(last[1]), dict(last[2])
                del last
            todo, early = reading.todo, reading.early
            dirty = self._dirty
            for due, part in pace.parts(order):
                if due:
                    yield
                for name, c in part:
                    kept = early.pop(name, None)
                    if kept is not None and kept[0] is c:
                        got = kept[1]
                    else:
                        if previous is not None:  # reading moves a window on: the read
                            previous.before_change(c)  # this one interrupts reads it first
                        todo.discard(name)
                        prev = details.get(name) if c.read_moves >= 0 else None
                        got = (
                            reading.read(c)
                            if prev is None
                            else reading.reread(c, prev, histograms[name], sums[name])
                        )
                        if default and c.cached is None and c.idle(now):
                            c.cached = got  # quiet: the same until its next report
                            dirty.pop(name, None)
                    details[name], histograms[name], sums[name] = got
        finally:
            self._reading = previous
        # Kept for the next read unless the table changed under it, or another read (a
        # figures() between two of these steps) began after it and knows better.
        if default and self._components_evicted == evicted and self._reads == started:
            self._last, self._last_read = (details, histograms, sums), token
        details.read, details.changed = token, changed
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
            traces=traces,
            rejected=rejected,
            errors=list(errors),
            total_histogram=total_histogram,
            component_histograms=histograms,
            latency_sums=sums,
            histogram_buckets=self.histogram_buckets,
            components_evicted=evicted,
            streams_evicted=self._streams_evicted,
        )


#: Numbers the reads of every aggregator of the process (``ComponentTable.read``), so that a
#: judge given another aggregator's figures cannot take them for the next of its own.
_READ_NUMBERS: Final = itertools.count(1)

_Got = tuple[ComponentFigures, list[int], float]
"""One component's figures, exported lifetime histogram and latency sum."""


class _Read:
    """One figures read under way: its instant and view, the names it has still to read
    (``todo``), and the components a fold had it read early, before changing them."""

    __slots__ = ("agg", "early", "now", "todo", "view")

    def __init__(self, agg: Aggregator, now: float, view: ViewSeconds, todo: set[str]) -> None:
        self.agg = agg
        self.now = now
        self.view = view
        self.todo = todo
        self.early: dict[str, tuple[ComponentState, _Got]] = {}

    def before_change(self, c: ComponentState) -> None:
        """``c`` is about to change: read it now if it is still to be read. (A name
        evicted and made anew meanwhile is read early for nothing: the read finds that
        the component it has is not this one.)"""
        if c.name in self.todo:
            self.todo.discard(c.name)
            self.early[c.name] = (c, self.read(c))

    def read(self, c: ComponentState) -> _Got:
        """``c``'s figures at the read's instant (its kept ones if it has them)."""
        default = self.view == self.agg.view
        if default and c.cached is not None:
            return c.cached
        figs, lcount, lsum = c.read(self.now, self.view)
        if default and c.views is not None:  # what the default view's table will keep
            c.read_moves = c.views[0]
        exported = c.exported
        if exported is None or c.exported_at != lcount:
            exported = c.exported = self.agg._export(c.window.total_counts())
            c.exported_at = lcount
        return figs, exported, lsum

    def reread(
        self, c: ComponentState, prev: ComponentFigures, exported: list[int], lsum: float
    ) -> _Got:
        """``read`` of a component of the default view whose last read's figures
        (``prev``, with its exported histogram and latency sum: the last read's table
        entries) were made from what its window still holds, nothing folded since: those
        figures with what moves with the clock made anew."""
        if c.cached is None:
            figs = c.reread(self.now, self.view, prev)
            if figs is not None:
                return figs, exported, lsum
        return self.read(c)
