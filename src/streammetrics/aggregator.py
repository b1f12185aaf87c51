"""Folds events and probe deltas into per-component, per-stream and system windows,
and builds the ``Snapshot`` the handlers read.

State is bounded: one ``RollingWindow`` per component and per stream, at most
``max_components`` components (an event from one more is rejected with reason
``cardinality`` and counted, never silently dropped), and a bounded table of open
spans. Nothing here grows with the number of events.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Collection, Generator, Sequence
from operator import add
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from .breaker import BREAKER_CODES
from .judge.health import HealthConfig, component_health, status_for, stream_stall, system_health
from .model.events import Delta, Event, Rejection
from .snapshot import (
    BreakerState,
    BreakerStatus,
    ComponentCounts,
    ComponentRunState,
    ComponentStatus,
    Deduction,
    Latency,
    Performance,
    ProcessStats,
    Snapshot,
    Streaming,
    StreamStatus,
    Traces,
)
from .windows import LATENCY_BOUNDS, N_BUCKETS, VIEWS, RollingWindow, ViewSeconds, WindowStats

__all__ = ("Aggregator", "AggregatorStatistics")

BufferStats = Callable[[], tuple[int, int]]
LagStats = Callable[[], int | None]


class AggregatorStatistics(msgspec.Struct, frozen=True):
    components: int
    streams: int
    events_folded: int
    deltas_folded: int
    rejected: dict[str, int]
    active_spans: int


class _Breaker:
    __slots__ = ("failure_count", "last_failure", "opened_at", "state", "time_open", "transitions")

    def __init__(self) -> None:
        self.state: BreakerState = "closed"
        self.failure_count = 0
        self.last_failure: float | None = None
        self.opened_at: float | None = None  # monotonic, while not closed
        self.time_open = 0.0
        self.transitions = 0


class _Component:
    __slots__ = (
        "breaker",
        "heartbeat",
        "last_activity",
        "last_error",
        "name",
        "spans",
        "status",
        "type",
        "window",
    )

    def __init__(self, name: str, type_: str | None, now: float) -> None:
        self.name = name
        self.type = type_
        self.window = RollingWindow(now)
        self.status: ComponentRunState = "registered"
        self.last_activity: float | None = None
        self.last_error: str | None = None
        self.heartbeat: float | None = None  # monotonic time of the last heartbeat
        self.breaker: _Breaker | None = None
        self.spans: RollingWindow | None = None  # span durations, once it ends one


class _Stream:
    __slots__ = (
        "buffer",
        "from_component",
        "seen_taken",
        "seen_used",
        "stream_name",
        "to_component",
        "waiting_since",
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
        self.from_component = from_component
        self.to_component = to_component
        self.stream_name = stream_name
        self.buffer = buffer
        # Stall tracking (health.stream_stall): since when items have waited with the
        # consumer taking none, and what its count and the buffer level were then.
        self.waiting_since: float | None = None
        self.seen_taken = -1
        self.seen_used = 0


def _latency(v: WindowStats) -> Latency:
    return Latency(p50=v.p50, p95=v.p95, p99=v.p99, count=v.latency_count)


class Aggregator:
    """The rolling aggregates of one MetricsEndpoint.

    ``clock`` is monotonic seconds (windows, rates), ``wall`` unix seconds (only for what
    responses show); tests pass their own.
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
        health: HealthConfig | None = None,
        view: ViewSeconds = 60,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.health = health or HealthConfig()
        self.view: ViewSeconds = view
        self.max_components = max_components
        self.max_streams = max_streams
        self.max_spans = max_spans
        self.span_timeout_s = span_timeout_s
        self._observe = frozenset(observe) if observe is not None else None
        now = clock()
        self._started_mono = now
        self._system = RollingWindow(now)
        self._components: dict[str, _Component] = {}
        self._streams: dict[str, _Stream] = {}
        self._lags: dict[str, LagStats] = {}
        self._spans: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._traces: OrderedDict[str, None] = OrderedDict()
        self._total_traces = 0
        self._completed_spans = 0
        self._expired_spans = 0
        self._events = 0
        self._deltas = 0
        self._rejected: dict[str, int] = {}

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
            c = self._components[name] = _Component(name, type_, self.clock())
        elif type_ is not None:
            c.type = type_
        if breaker and c.breaker is None:
            c.breaker = _Breaker()

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
        if lag is not None:
            self._lags[key] = lag
        else:
            self._lags.pop(key, None)
        s = self._streams.get(key)
        if s is None:
            self._streams[key] = _Stream(
                self.clock(), from_component, to_component, stream_name, buffer
            )
        else:
            s.from_component, s.to_component = from_component, to_component
            s.stream_name, s.buffer = stream_name, buffer

    def _consumer_lag(self, key: str) -> int | None:
        fn = self._lags.get(key)
        if fn is None:
            return None
        try:
            return fn()
        except Exception:  # a transport that went away must not break the page
            return None

    def observes(self, component: str) -> bool:
        return self._observe is None or component in self._observe

    def reject(self, reason: str, n: int = 1) -> None:
        """Count ``n`` reports that could not be folded (a transport's malformed bodies)."""
        self._rejected[reason] = self._rejected.get(reason, 0) + n

    def _component(self, name: str, now: float) -> _Component | None:
        c = self._components.get(name)
        if c is None:
            if len(self._components) >= self.max_components:
                return None
            c = self._components[name] = _Component(name, None, now)
        return c

    def _stream(self, key: str, now: float) -> _Stream | None:
        s = self._streams.get(key)
        if s is None:
            if len(self._streams) >= self.max_streams:
                return None
            s = self._streams[key] = _Stream(now, stream_name=key)
        return s

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
        # per component: [processed, errors, bytes, latency_sum, first bucket, histogram, c]
        acc: dict[str, list[Any]] = {}
        sys_lsum = 0.0
        sys_msgs = 0
        skipped = 0
        bisect, bounds = bisect_left, LATENCY_BOUNDS
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
            ts = ev.timestamp
            c.last_activity = ts if ts is not None else wall
            if kind == "processed" or kind == "error":
                if a is None:
                    a = acc[name] = [0, 0, 0, 0.0, None, None, c]
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
                    h = a[5]
                    if h is not None:
                        h[k] += 1
                    elif a[4] is None:
                        a[4] = k  # one latency so far: no histogram yet
                    else:
                        h = a[5] = [0] * N_BUCKETS
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
                self._breaker_to(c, ev.detail, now, wall)
            elif kind == "span_start":
                self._span_start(ev, now)
            else:  # span_end
                self._span_end(c, ev, now)
            if ev.stream is not None and kind in ("processed", "error"):
                s = self._stream(ev.stream, now)
                if s is None:
                    self.reject("cardinality")
                else:
                    s.window.add(now, 0, 0, ev.count, ev.bytes)
                sys_msgs += ev.count  # as fold_deltas does for probe messages
        self._events += len(events) - skipped
        if acc or sys_msgs:
            processed = errors = nbytes = 0
            sys_hist: list[int] | None = None
            for p, e, b, lsum, first, h, c in acc.values():
                processed += p
                errors += e
                nbytes += b
                w = c.window
                w.add(now, p, e, 0, b)
                if h is not None:
                    w.add_histogram(now, h, lsum)
                    sys_hist = list(map(add, sys_hist, h)) if sys_hist is not None else list(h)
                elif first is not None:
                    w.add_bucket(now, first, lsum)
                    if sys_hist is None:
                        sys_hist = [0] * N_BUCKETS
                    sys_hist[first] += 1
            system.add(now, processed, errors, sys_msgs, nbytes)
            if sys_hist is not None:
                system.add_histogram(now, sys_hist, sys_lsum)
        return rejected

    def fold_deltas(self, deltas: Sequence[Delta]) -> None:
        """Fold probe deltas: per delta O(histogram buckets), whatever it counted."""
        now = self.clock()
        wall = self.wall()
        system = self._system
        for d in deltas:
            if self._observe is not None and d.component not in self._observe:
                continue
            c = self._component(d.component, now)
            if c is None:
                self.reject("cardinality")
                continue
            self._deltas += 1
            c.last_activity = wall
            if c.status == "registered":
                c.status = "running"
            if d.stream is not None:
                s = self._stream(d.stream, now)
                if s is None:
                    self.reject("cardinality")
                else:
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

    def _breaker_to(self, c: _Component, state: BreakerState, now: float, wall: float) -> None:
        b = c.breaker
        if b is None:
            b = c.breaker = _Breaker()
        if state == b.state:
            return
        b.transitions += 1
        if state == "open":
            b.failure_count += 1
            b.last_failure = wall
        if b.state == "closed":
            b.opened_at = now
        elif state == "closed" and b.opened_at is not None:
            b.time_open += now - b.opened_at
            b.opened_at = None
        b.state = state

    def _span_start(self, ev: Event, now: float) -> None:
        if ev.trace_id is not None and ev.trace_id not in self._traces:
            self._total_traces += 1
            self._traces[ev.trace_id] = None
            if len(self._traces) > self.max_spans:
                self._traces.popitem(last=False)
        if ev.span_id is not None:
            key = (ev.component, ev.span_id)
            self._spans.pop(key, None)  # a restarted span moves to the back: oldest stays first
            self._spans[key] = now
            if len(self._spans) > self.max_spans:
                self._spans.popitem(last=False)
                self._expired_spans += 1

    def _span_end(self, c: _Component, ev: Event, now: float) -> None:
        started = self._spans.pop((ev.component, ev.span_id), None) if ev.span_id else None
        self._completed_spans += 1
        latency = (
            ev.latency
            if ev.latency is not None
            else (now - started if started is not None else None)
        )
        if latency is not None:
            c.window.add(now, latency=latency)
            self._system.add(now, latency=latency)
            if c.spans is None:
                c.spans = RollingWindow(now)
            c.spans.add(now, latency=latency)

    def _expire_spans(self, now: float) -> None:
        limit = now - self.span_timeout_s
        spans = self._spans
        while spans:
            key, started = next(iter(spans.items()))
            if started >= limit:
                break
            del spans[key]
            self._expired_spans += 1

    def _stall(
        self,
        key: str,
        s: _Stream,
        used: int | None,
        size: int | None,
        now: float,
        into: dict[str, list[Deduction]],
    ) -> float | None:
        """How long ``s`` has had items waiting that its consumer did not take; adds the
        stall deduction (health.stream_stall) for the consumer once that is too long."""
        if not used:
            s.waiting_since = None
            return None
        # The consumer took items if its count moved or the buffer shrank. An unobserved
        # consumer is judged by the buffer alone, and its producer bears the penalty.
        consumer = self._components.get(s.to_component) if s.to_component else None
        taken = -1
        if consumer is not None:
            done = consumer.window.totals()
            taken = done[0] + done[1]
        if s.waiting_since is None or taken != s.seen_taken or used < s.seen_used:
            s.waiting_since = now
        s.seen_taken, s.seen_used = taken, used
        stalled = now - s.waiting_since
        who = s.to_component if consumer is not None else s.from_component
        if who is not None and who in self._components:
            d = stream_stall(
                key, who, waiting=used, capacity=size, stalled_for=stalled, config=self.health
            )
            if d is not None:
                into.setdefault(who, []).append(d)
        return stalled

    # -- reading ---------------------------------------------------------------------------

    def statistics(self) -> AggregatorStatistics:
        return AggregatorStatistics(
            components=len(self._components),
            streams=len(self._streams),
            events_folded=self._events,
            deltas_folded=self._deltas,
            rejected=dict(self._rejected),
            active_spans=len(self._spans),
        )

    def snapshot(
        self,
        process: ProcessStats | None = None,
        errors: Sequence[str] = (),
        view: ViewSeconds | None = None,
    ) -> Snapshot:
        """The figures as of now. Cost grows with components and streams, not events."""
        steps = self._snapshot_steps(process, errors, view, chunk=0)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def snapshot_async(
        self,
        process: ProcessStats | None = None,
        errors: Sequence[str] = (),
        view: ViewSeconds | None = None,
        *,
        chunk: int = 256,
    ) -> Snapshot:
        """``snapshot()`` that lets the event loop run every ``chunk`` components.

        The aggregates are folded on the loop, so a snapshot cannot be built in a worker
        thread; with 10,000 components one build is ~170 ms, long enough to stall every
        request behind it. Each component's figures are still read in one piece; a fold
        that lands between two chunks shows in the components not read yet.
        """
        steps = self._snapshot_steps(process, errors, view, chunk=chunk)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await anyio.lowlevel.checkpoint()

    def _snapshot_steps(
        self,
        process: ProcessStats | None,
        errors: Sequence[str],
        view: ViewSeconds | None,
        *,
        chunk: int,
    ) -> Generator[None, None, Snapshot]:
        """Builds the snapshot, yielding every ``chunk`` components (never when 0)."""
        view = view or self.view
        now = self.clock()
        wall = self.wall()
        process = process or ProcessStats()
        self._expire_spans(now)
        hc = self.health
        key = f"{view}s"
        details: dict[str, ComponentStatus] = {}
        breakers: dict[str, BreakerStatus] = {}
        histograms: dict[str, list[int]] = {}
        sums: dict[str, float] = {}
        reasons = []
        scores = []
        healthy = running = 0
        # Streams first: a stalled one counts against its consumer's score.
        streams: dict[str, StreamStatus] = {}
        stalls: dict[str, list[Deduction]] = {}
        total_messages = 0
        message_rate = 0.0
        active = 0
        for skey, s in self._streams.items():
            sv = s.window.view(now, view)
            msgs = s.window.totals()[2]
            used = size = None
            if s.buffer is not None:
                try:
                    used, size = s.buffer()
                except Exception as exc:  # a binding that went away must not break the page
                    errors = [*errors, f"stream {skey}: buffer statistics failed: {exc!r}"]
            stalled = self._stall(skey, s, used, size, now, stalls)
            streams[skey] = StreamStatus(
                total_messages=msgs,
                message_rate=sv.message_rate,
                from_component=s.from_component,
                to_component=s.to_component,
                stream_name=s.stream_name,
                buffer_used=used,
                buffer_size=size,
                consumer_lag=self._consumer_lag(skey),
                stalled_seconds=stalled,
            )
            total_messages += msgs
            message_rate += sv.message_rate
            active += sv.messages > 0 or s.buffer is not None
        for i, (name, c) in enumerate(list(self._components.items())):
            if chunk and i and i % chunk == 0:
                yield
            w = c.window
            views = {f"{s}s": w.view(now, s) for s in VIEWS}
            v = views[key]
            b = c.breaker
            bstate: BreakerState = b.state if b is not None else "closed"
            hb_age = now - c.heartbeat if c.heartbeat is not None else None
            score, ded = component_health(
                name,
                status=c.status,
                error_rate=v.error_rate,
                breaker=bstate,
                heartbeat_age=hb_age,
                config=hc,
                extra=stalls.get(name, ()),
            )
            ok = score >= hc.healthy_threshold
            healthy += ok
            running += c.status == "running"
            scores.append(score)
            reasons += ded
            processed, errs, _m, _b, _lc, lsum = w.totals()
            details[name] = ComponentStatus(
                is_healthy=ok,
                items_processed=processed,
                errors_encountered=errs,
                status=c.status,
                last_activity=c.last_activity,
                type=c.type,
                health=score,
                items_per_second=v.items_per_second,
                error_rate=v.error_rate,
                latency=_latency(v),
                last_error=c.last_error,
                windows=views,
                span_latency=_latency(c.spans.view(now, view)) if c.spans is not None else None,
                heartbeat_age_s=hb_age,
            )
            if b is not None:
                open_for = b.time_open + (now - b.opened_at if b.opened_at is not None else 0.0)
                breakers[name] = BreakerStatus(
                    state=b.state,
                    failure_count=b.failure_count,
                    last_failure=b.last_failure,
                    time_open_seconds=open_for,
                    transitions=b.transitions,
                )
            histograms[name] = w.total_histogram()
            sums[name] = lsum
        score, sys_ded = system_health(
            scores,
            memory_mb=process.memory_usage_mb,
            cpu_percent=process.cpu_usage_percent,
            config=hc,
        )
        reasons += sys_ded
        sv = self._system.view(now, view)
        return Snapshot(
            timestamp=wall,
            uptime_seconds=now - self._started_mono,
            health_score=score,
            system_status=status_for(score, critical_firing=False, config=hc),
            components=ComponentCounts(total=len(details), healthy=healthy, running=running),
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
                latency=_latency(sv),
                window_seconds=view,
            ),
            traces=Traces(
                total_traces=self._total_traces,
                active_spans=len(self._spans),
                completed_spans=self._completed_spans,
                expired_spans=self._expired_spans,
            ),
            alerts=[],
            recommendations=[],
            reasons=reasons,
            rejected=dict(self._rejected),
            errors=list(errors),
            total_histogram=self._system.total_histogram(),
            component_histograms=histograms,
            latency_sums=sums,
        )
