"""The health judgement: a score from 0.0 to 1.0, a status, and the reasons for both.

The formula is deliberately plain so that a person can check it by hand. Each
component starts at 1.0 and loses a *penalty* per problem:

==========================================================  =======
problem                                                     penalty
==========================================================  =======
stopped or failed                                           1.0
silent past ``heartbeat_timeout_s`` (once it sent one)      1.0
circuit breaker open                                        0.5
circuit breaker half_open                                   0.25
error rate (default window) over ``error_budget``           0.2
error rate over five times ``error_budget``                 0.6
a stalled input stream (see below), each                    0.5
==========================================================  =======

* a component's score is ``max(0, 1 - sum of its penalties)``; it is healthy at or
  above ``healthy_threshold``;
* the system score is the mean of the component scores (1.0 with no component), less
  0.1 for process memory over ``memory_limit_mb`` and 0.1 for CPU over
  ``cpu_limit_percent``, clamped to [0, 1];
* status: ``healthy`` at or above ``healthy_threshold`` with no critical alert firing,
  ``degraded`` at or above ``degraded_threshold``, ``unhealthy`` below; precedence
  unhealthy > degraded > healthy. Only ``healthy`` answers 200 on ``/health``.

A *stalled stream* is a binding with items waiting in its buffer while its consumer
has taken none of them (its processed + error count has not moved and the buffer has
not shrunk) for longer than ``stall_timeout_s``. The penalty goes to the consumer (the
binding's ``to_component``): work is queued for it and it is not doing it, whatever
the cause (a hung handler, a breaker held open, a consumer that died). A slow consumer
that still makes progress is *not* stalled; that is lag, which the ``ConsumerLag``
alert and the capacity recommendation report. A stream that simply carries nothing
is not stalled either: an idle API is not a fault, so "traffic dropped to zero" is
left to the ``ThroughputStopped`` warning rather than the score.

Every penalty is one ``Deduction`` in ``/health``'s ``reasons``, with the component
and the figures that caused it (``error_rate 0.12 > budget 0.05``). A firing critical
alert is a reason too, with penalty 0: the score is the score, the alert is why the
status is not ``healthy``. So is an event source beyond the process that cannot read
(``EventSource``: a Redis consumer whose server is away): penalty 0, status at best
``degraded``, and the ``EventSourceDown`` alert on its stream, until it reads again.

``HealthJudge`` makes this judgement once per snapshot, over the components whose
figures the read changed (the rest, and the sums over them, are carried from its last
judgement; a full pass whenever it cannot tell): stalls and scores first, then the
alert rules (which read the scores: ``SystemUnhealthy`` is ``health_score <
healthy_threshold``), then the status, which needs both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final, Protocol

import msgspec

from ..snapshot import (
    NO_ALERTS,
    AlertReport,
    BreakerState,
    BreakerStatus,
    ComponentCounts,
    ComponentFigures,
    ComponentRunState,
    ComponentStatus,
    ComponentTable,
    Deduction,
    Figures,
    Snapshot,
    Status,
    Streaming,
    StreamStatus,
)
from ..steps import BUDGET_S, NEVER, Pace, Steps, finish, finish_async

__all__ = (
    "PENALTIES",
    "Alerting",
    "Changes",
    "EventSource",
    "HealthConfig",
    "HealthJudge",
    "SourceHealth",
    "component_health",
    "down",
    "status_for",
    "stream_stall",
    "system_health",
)

Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

#: The penalty of each kind of problem (the table of the module docstring).
PENALTIES: Final[dict[str, float]] = {
    "down": 1.0,
    "breaker_open": 0.5,
    "breaker_half_open": 0.25,
    "error_budget": 0.2,
    "error_budget_x5": 0.6,
    "stalled_stream": 0.5,
    "memory": 0.1,
    "cpu": 0.1,
}


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the health judgement (the MetricsEndpoint's ``config.health``)."""

    error_budget: Ratio = 0.05
    """Error rate (over the default window) a component may have without penalty."""
    heartbeat_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """A component that sent heartbeats and then fell silent this long is down."""
    healthy_threshold: Ratio = 0.8
    """Score at or above which the system (or a component) is healthy."""
    degraded_threshold: Ratio = 0.5
    """Score at or above which the system is degraded rather than unhealthy."""
    memory_limit_mb: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Process RSS above which the score loses 0.1; None: no limit."""
    cpu_limit_percent: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Process CPU above which the score loses 0.1; None: no limit."""
    stall_timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = 60.0
    """Items waiting on a binding that its consumer has not touched for this long make
    the binding stalled; None: never judge stalls."""

    def __post_init__(self) -> None:
        if self.degraded_threshold > self.healthy_threshold:
            raise ValueError(
                f"degraded_threshold {self.degraded_threshold} is above healthy_threshold "
                f"{self.healthy_threshold}: a score could then be degraded and healthy at once"
            )


def down(
    status: ComponentRunState, heartbeat_age: float | None, config: HealthConfig
) -> str | None:
    """Why a component is down (stopped, failed, or silent past ``heartbeat_timeout_s``
    once it sent a heartbeat), or None while it is up: its score's ``down`` penalty, and
    the ``up`` figure of alert rules."""
    if status in ("stopped", "failed"):
        return f"component {status}"
    if heartbeat_age is not None and heartbeat_age > config.heartbeat_timeout_s:
        return f"no heartbeat for {heartbeat_age:.1f}s > timeout {config.heartbeat_timeout_s:g}s"
    return None


def component_health(
    name: str,
    *,
    status: ComponentRunState,
    error_rate: float,
    breaker: BreakerState,
    heartbeat_age: float | None,
    config: HealthConfig,
    extra: Sequence[Deduction] = (),
) -> tuple[float, list[Deduction]]:
    """A component's score and the deductions that made it; ``extra`` are deductions
    of its input streams (``stream_stall``) that count against it too."""
    out: list[Deduction] = []
    why = down(status, heartbeat_age, config)
    if why is not None:
        out.append(Deduction(name, why, PENALTIES["down"]))
    if breaker == "open":
        out.append(Deduction(name, "circuit breaker open", PENALTIES["breaker_open"]))
    elif breaker == "half_open":
        out.append(Deduction(name, "circuit breaker half_open", PENALTIES["breaker_half_open"]))
    budget = config.error_budget
    if error_rate > budget:
        penalty = PENALTIES["error_budget_x5" if error_rate > 5 * budget else "error_budget"]
        out.append(Deduction(name, f"error_rate {error_rate:.3g} > budget {budget:g}", penalty))
    if extra:
        out += extra
    if not out:
        return 1.0, out
    score = max(0.0, 1.0 - sum(d.penalty for d in out))
    return round(score, 4), out


def stream_stall(
    stream: str,
    consumer: str | None,
    *,
    waiting: int,
    capacity: int | None,
    stalled_for: float,
    config: HealthConfig,
) -> Deduction | None:
    """The deduction for a binding whose ``waiting`` items its consumer has not taken
    for ``stalled_for`` seconds, or None while that is within ``stall_timeout_s``."""
    limit = config.stall_timeout_s
    if limit is None or waiting <= 0 or stalled_for <= limit:
        return None
    of = f"/{capacity}" if capacity else ""
    return Deduction(
        consumer,
        f"stream {stream} stalled: {waiting}{of} items waiting, none taken for "
        f"{stalled_for:.3g}s > {limit:g}s",
        PENALTIES["stalled_stream"],
    )


def system_health(
    component_scores: Sequence[float],
    *,
    memory_mb: float | None,
    cpu_percent: float | None,
    config: HealthConfig,
) -> tuple[float, list[Deduction]]:
    """The system score from its components' and the process's figures."""
    mean = sum(component_scores) / len(component_scores) if component_scores else 1.0
    return _system_health(mean, memory_mb=memory_mb, cpu_percent=cpu_percent, config=config)


def _system_health(
    score: float, *, memory_mb: float | None, cpu_percent: float | None, config: HealthConfig
) -> tuple[float, list[Deduction]]:
    """``system_health`` from the mean of the component scores."""
    out: list[Deduction] = []
    lim = config.memory_limit_mb
    if lim is not None and memory_mb is not None and memory_mb > lim:
        out.append(
            Deduction(None, f"memory {memory_mb:.0f}MB > limit {lim:g}MB", PENALTIES["memory"])
        )
    lim = config.cpu_limit_percent
    if lim is not None and cpu_percent is not None and cpu_percent > lim:
        out.append(Deduction(None, f"cpu {cpu_percent:.0f}% > limit {lim:g}%", PENALTIES["cpu"]))
    score -= sum(d.penalty for d in out)
    return round(min(1.0, max(0.0, score)), 4), out


def status_for(score: float, *, critical_firing: bool, config: HealthConfig) -> Status:
    """The status of ``score``: unhealthy > degraded > healthy."""
    if score < config.degraded_threshold:
        return "unhealthy"
    if score < config.healthy_threshold or critical_firing:
        return "degraded"
    return "healthy"


class Alerting(Protocol):
    """The alert rules a judgement consults (an ``AlertEngine``)."""

    def evaluate(self, snap: Snapshot) -> AlertReport:
        """Step every rule's lifecycle on ``snap`` and report the outcome."""
        ...

    def evaluate_steps(
        self,
        snap: Snapshot,
        *,
        chunk: int = 256,
        pace: Pace | None = None,
        changes: Changes | None = None,
    ) -> Steps[AlertReport]:
        """``evaluate()`` as steps that let the event loop run every ``chunk`` instances
        (``pace``: the judgement's, which then decides instead; ``changes``: which
        components' statuses are new against which earlier snapshot)."""
        ...

    def current(self) -> AlertReport:
        """The outcome of the last evaluation, stepping nothing."""
        ...


class SourceHealth(msgspec.Struct, frozen=True):
    """What an event source says of itself at one instant."""

    name: str
    """The stream key its events are counted under (``redis:<stream>``)."""
    up: bool
    """Whether it can read (connected, its last read worked)."""
    reason: str = ""
    """Why it cannot, while it cannot (the last error); empty while up."""


class EventSource(Protocol):
    """An event source beyond the process, as the judgement sees it. The seam between
    the transports (which know why a read failed) and the judge (which says what that
    means for health): the endpoint hands its sources to ``HealthJudge``."""

    def source_health(self) -> SourceHealth:
        """Its state now; called once per judged snapshot, on the event loop."""
        ...


_Judged = tuple[ComponentFigures, float, tuple[Deduction, ...], ComponentStatus, bool]
"""A component's figures, and its score, deductions and status judged from them, and
whether they were judged from them alone (no breaker, no stall), so that the same
figures are judged the same (a tuple of gc=False Structs and atoms: the collector stops
tracking it, as it holds no container)."""

#: Component scores are rounded to 4 decimals: in these units they are integers, whose
#: sum is exact, so that a sum kept from tick to tick is the sum made afresh.
_UNITS: Final = 10_000


class Changes(msgspec.Struct, frozen=True):
    """Which components' statuses a snapshot has anew against an earlier one: what lets
    the alert figures be read again for those alone."""

    token: object
    """This snapshot, to be named by the next one's ``since`` (compared by identity)."""
    since: object = None
    """The earlier snapshot's token; None: against none (any status may be new)."""
    names: Sequence[str] = ()
    """The components whose status is not the earlier snapshot's very object."""


class _Tally:
    """What a judgement summed over its components, kept so that the next one changes
    only the components that changed: the statuses, the integer sum of the scores
    (``_UNITS``), the healthy and running counts, and the deductions by component with
    each component's place, which orders them as a full pass would."""

    __slots__ = (
        "base",
        "config",
        "deducted",
        "details",
        "healthy",
        "index",
        "marked",
        "reasons",
        "running",
        "token",
        "units",
    )

    def __init__(self, base: int, config: HealthConfig | None = None) -> None:
        self.base = base  # the ComponentTable.read judged (0: none to build on)
        self.config = config  # the thresholds it was judged by
        self.token = object()  # the snapshot made (Changes.token)
        self.details: dict[str, ComponentStatus] = {}
        self.units = self.healthy = self.running = 0
        self.deducted: dict[str, tuple[Deduction, ...]] = {}
        self.index: dict[str, int] = {}
        self.reasons: list[Deduction] | None = []  # None: to be ordered again
        #: Components judged with a breaker or a stall: judged again next time.
        self.marked: set[str] = set()

    def carry(self, prev: _Tally) -> None:
        """Start from ``prev``'s sums (it is not used again: its dicts are taken over)."""
        self.details = dict(prev.details)  # prev's is in the snapshot it made
        self.units, self.healthy, self.running = prev.units, prev.healthy, prev.running
        self.deducted, self.index, self.reasons = prev.deducted, prev.index, prev.reasons

    def add(self, name: str, j: _Judged) -> None:
        c, score, ded, status, _plain = j
        self.units += round(score * _UNITS)
        self.healthy += status.is_healthy
        self.running += c.status == "running"
        if name not in self.index:
            self.index[name] = len(self.index)
        if ded:
            self.deducted[name] = ded
            self.reasons = None

    def drop(self, name: str, j: _Judged) -> None:
        c, score, ded, status, _plain = j
        self.units -= round(score * _UNITS)
        self.healthy -= status.is_healthy
        self.running -= c.status == "running"
        if ded:
            del self.deducted[name]
            self.reasons = None

    def ordered_reasons(self) -> list[Deduction]:
        """The components' deductions in the components' order."""
        if self.reasons is None:
            index = self.index
            deducted = self.deducted
            self.reasons = [d for n in sorted(deducted, key=index.__getitem__) for d in deducted[n]]
        return self.reasons


class _Waiting:
    """A stream with items waiting: since when its consumer has taken none (monotonic,
    on the snapshots' ``uptime_seconds``), and its count and the buffer level then."""

    __slots__ = ("since", "taken", "used")

    def __init__(self, since: float, taken: int, used: int) -> None:
        self.since = since
        self.taken = taken
        self.used = used


class HealthJudge:
    """The one health judgement of a MetricsEndpoint, made once per snapshot: scores,
    stalled streams, status and reasons, from the aggregator's ``Figures`` and the
    outcome of its ``alerts`` (none: no alert is ever firing).

    It is stateful where one snapshot cannot tell: how long each stream has had items
    waiting that its consumer did not take (``StreamStatus.stalled_seconds``).
    """

    def __init__(
        self,
        health: HealthConfig | None = None,
        alerts: Alerting | None = None,
        sources: Sequence[EventSource] = (),
    ) -> None:
        self.health = health or HealthConfig()
        self.alerts = alerts
        self._waiting: dict[str, _Waiting] = {}
        # The last judgement of each component, kept with the figures it was made from:
        # figures that are the same object (an idle component's) are judged the same.
        self._judged: dict[str, _Judged] = {}
        self._tally = _Tally(0)
        #: Event sources beyond the process: one that cannot read degrades the status.
        self.sources: list[EventSource] = list(sources)

    def judge(self, figures: Figures, *, step_alerts: bool = True) -> Snapshot:
        """The snapshot of ``figures``. ``step_alerts``: evaluate the rules on it (the
        default view, once per tick) rather than show their last outcome (other views),
        so that one lifecycle serves every view."""
        return finish(self._steps(figures, step_alerts, NEVER))

    async def judge_async(
        self,
        figures: Figures,
        *,
        step_alerts: bool = True,
        chunk: int = 256,
        budget_s: float | None = BUDGET_S,
        pace: Pace | None = None,
    ) -> Snapshot:
        """``judge()`` that lets the event loop run every ``chunk`` components, and sooner
        once it has held the loop ``budget_s``, as ``Aggregator.figures_async`` does while
        it reads them (``pace``: the one that read shared, instead of these two)."""
        pace = pace or Pace(chunk, budget_s)
        return await finish_async(self._steps(figures, step_alerts, pace), pace)

    def _steps(self, f: Figures, step_alerts: bool, pace: Pace) -> Steps[Snapshot]:
        hc = self.health
        stalls: dict[str, list[Deduction]] = {}
        streams = self._stalls(f, stalls)
        sources_down, streams = self._sources(streams)
        breakers = f.circuit_breakers
        prev = self._tally
        # Until this judgement is complete, no earlier one can be built on: prev's sums
        # are taken over as they are changed, and a judgement cancelled midway has left
        # them half changed.
        self._tally = _Tally(0)
        comps = f.detailed_components
        judged = self._judged
        read, changed = (
            (comps.read, comps.changed) if isinstance(comps, ComponentTable) else (0, None)
        )
        tally = _Tally(read, hc)
        if prev.config is not hc:  # judgements made under other thresholds: none holds
            self._judged.clear()
        # Judged again whatever their figures: a breaker's and a stall's figures move with
        # time, and a component that had one last time may have it no more.
        tally.marked = {*breakers, *stalls}
        changes: Changes
        if changed is not None and prev.base and changed[0] == prev.base and prev.config is hc:
            # The components not in f.changed have the very figures judged last time: so
            # their judgement is the last one, and the sums start from the last ones.
            tally.carry(prev)
            details = tally.details
            new: list[str] = []
            todo: Sequence[str] = changed[1]  # (a name twice would find itself judged)
            if tally.marked or prev.marked:
                todo = list(dict.fromkeys((*todo, *tally.marked, *prev.marked)))
            for due, part in pace.parts(todo):
                if due:
                    yield
                for name in part:
                    old = judged.get(name)
                    c = comps.get(name)
                    if c is None:  # gone, which only an eviction does (and that reads all)
                        if old is not None:
                            del judged[name]
                            if details.pop(name, None) is not None:
                                tally.drop(name, old)
                                new.append(name)
                        continue
                    j = self._judge_one(name, c, breakers, stalls, old)
                    if j is old:
                        continue
                    if old is not None and name in details:
                        if (
                            j[1] == old[1]
                            and j[2] == old[2]
                            and j[3].is_healthy == old[3].is_healthy
                            and c.status == old[0].status
                        ):
                            # New figures, the same score, deductions and state (most of
                            # a busy tick's): the sums and reasons stand as they are.
                            details[name] = j[3]
                            new.append(name)
                            continue
                        tally.drop(name, old)
                    tally.add(name, j)
                    # A component keeps its place in the dict; a new one comes last, in the
                    # order the figures list it (f.changed's): as the figures have them.
                    details[name] = j[3]
                    new.append(name)
            changes = Changes(tally.token, prev.token, new)
        else:
            details = tally.details
            for due, items in pace.parts(list(comps.items())):
                if due:
                    yield
                for name, c in items:
                    j = self._judge_one(name, c, breakers, stalls, judged.get(name))
                    details[name] = j[3]
                    tally.add(name, j)
            if len(judged) > len(details):  # components no longer in the figures (evicted)
                for gone in [n for n in judged if n not in details]:
                    del judged[gone]
            changes = Changes(tally.token)
        self._tally = tally
        reasons = tally.ordered_reasons()
        n = len(details)
        perf = f.performance
        score, sys_ded = _system_health(
            tally.units / _UNITS / n if n else 1.0,
            memory_mb=perf.memory_usage_mb,
            cpu_percent=perf.cpu_usage_percent,
            config=hc,
        )
        reasons = [*reasons, *sys_ded, *sources_down]
        scored = Snapshot(
            timestamp=f.timestamp,
            uptime_seconds=f.uptime_seconds,
            health_score=score,
            # The rules read the scores, never the status: it is settled below, from the
            # score and the critical alerts the rules fire.
            system_status=status_for(score, critical_firing=False, config=hc),
            components=ComponentCounts(total=n, healthy=tally.healthy, running=tally.running),
            detailed_components=details,
            circuit_breakers=breakers,
            streaming=streams,
            performance=perf,
            traces=f.traces,
            alerts=[],
            recommendations=[],
            reasons=reasons,
            rejected=f.rejected,
            errors=f.errors,
            total_histogram=f.total_histogram,
            component_histograms=f.component_histograms,
            latency_sums=f.latency_sums,
            components_evicted=f.components_evicted,
            streams_evicted=f.streams_evicted,
            histogram_buckets=f.histogram_buckets,
        )
        if self.alerts is None:
            report = NO_ALERTS
        else:
            report = (
                (yield from self.alerts.evaluate_steps(scored, pace=pace, changes=changes))
                if step_alerts
                else self.alerts.current()
            )
        critical = [a for a in report.alerts if a.level == "critical"]
        if critical:
            reasons = [
                *reasons,
                *(
                    Deduction(a.component, f"critical alert {a.name} firing: {a.message}", 0.0)
                    for a in critical
                ),
            ]
        return msgspec.structs.replace(
            scored,
            system_status=status_for(
                score, critical_firing=bool(critical or sources_down), config=hc
            ),
            reasons=reasons,
            alerts=report.alerts,
            pending_alerts=report.pending_alerts,
            resolved_alerts=report.resolved_alerts,
            recommendations=report.recommendations,
        )

    def _judge_one(
        self,
        name: str,
        c: ComponentFigures,
        breakers: dict[str, BreakerStatus],
        stalls: dict[str, list[Deduction]],
        kept: _Judged | None,
    ) -> _Judged:
        """``name``'s judgement: the last one (``kept``) when made from these very
        figures alone."""
        b = breakers.get(name)
        extra = stalls.get(name)
        plain = b is None and not extra
        if kept is not None and kept[0] is c and kept[4] and plain:
            return kept
        hc = self.health
        hb = c.heartbeat_age_s
        ded: tuple[Deduction, ...]
        if (
            plain
            and c.error_rate <= hc.error_budget
            and c.status != "stopped"
            and c.status != "failed"
            and (hb is None or hb <= hc.heartbeat_timeout_s)
        ):
            score, ded = 1.0, ()  # the common case, without building the deductions
        else:
            score, found = component_health(
                name,
                status=c.status,
                error_rate=c.error_rate,
                breaker=b.state if b is not None else "closed",
                heartbeat_age=hb,
                config=hc,
                extra=extra or (),
            )
            ded = tuple(found)
        # By position, in the order of ComponentStatus's fields (a third cheaper than by
        # keyword, for every changed component of every tick).
        status = ComponentStatus(
            score >= hc.healthy_threshold,  # is_healthy
            c.items_processed,
            c.errors_encountered,
            c.status,
            c.last_activity,
            c.type,
            score,  # health
            c.items_per_second,
            c.error_rate,
            c.latency,
            c.last_error,
            c.windows,
            c.span_latency,
            hb,  # heartbeat_age_s
            c.client_errors,
        )
        j = self._judged[name] = (c, score, ded, status, plain)
        return j

    def _sources(self, streams: Streaming) -> tuple[list[Deduction], Streaming]:
        """The reasons of the sources that cannot read (penalty 0: they keep the status
        from ``healthy``, as a critical alert does), and ``streams`` with each source's
        ``source_up`` on the stream it feeds (what ``EventSourceDown`` reads)."""
        if not self.sources:
            return [], streams
        out: list[Deduction] = []
        judged = dict(streams.streams)
        for src in self.sources:
            h = src.source_health()
            if not h.up:
                out.append(Deduction(None, f"event source {h.name} cannot read: {h.reason}", 0.0))
            st = judged.get(h.name)
            if st is not None:
                judged[h.name] = msgspec.structs.replace(st, source_up=h.up)
        return out, msgspec.structs.replace(streams, streams=judged)

    def _stalls(self, f: Figures, into: dict[str, list[Deduction]]) -> Streaming:
        """``f.streaming`` with each stream's ``stalled_seconds``; adds the stall
        deductions (``stream_stall``) to ``into``, by the component that bears them.

        A consumer took items if its count moved or the buffer shrank. An unobserved
        consumer is judged by the buffer alone, and its producer bears the penalty."""
        now = f.uptime_seconds
        components = f.detailed_components
        waiting = self._waiting
        streams = f.streaming.streams
        judged: dict[str, StreamStatus] = {}
        for key, st in streams.items():
            used = st.buffer_used
            if not used:
                waiting.pop(key, None)
                judged[key] = st
                continue
            consumer = components.get(st.to_component) if st.to_component else None
            taken = (
                -1 if consumer is None else consumer.items_processed + consumer.errors_encountered
            )
            w = waiting.get(key)
            if w is None:
                w = waiting[key] = _Waiting(now, taken, used)
            elif taken != w.taken or used < w.used:
                w.since = now
            w.taken, w.used = taken, used
            stalled = now - w.since
            who = st.to_component if consumer is not None else st.from_component
            if who is not None and who in components:
                d = stream_stall(
                    key,
                    who,
                    waiting=used,
                    capacity=st.buffer_size,
                    stalled_for=stalled,
                    config=self.health,
                )
                if d is not None:
                    into.setdefault(who, []).append(d)
            judged[key] = msgspec.structs.replace(st, stalled_seconds=stalled)
        if len(waiting) > len(streams):  # streams of an aggregator no longer served
            for key in [k for k in waiting if k not in streams]:
                del waiting[key]
        return msgspec.structs.replace(f.streaming, streams=judged)
