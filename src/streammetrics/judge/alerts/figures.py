"""The named figures an alert rule reads, and how each is read from a snapshot.

A rule is evaluated per instance of its scope (the system, each component, each stream),
so a snapshot reads as one dict of figures per instance. ``FIGURE_HELP`` is the one list
of what exists; the figure sets rules are compiled against come from it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from operator import attrgetter, itemgetter, ne
from typing import Final, Literal

from ...breaker import BREAKER_CODES
from ...snapshot import BreakerStatus, ComponentStatus, Snapshot
from ...steps import NEVER, Pace, Steps, finish
from ..health import Changes, HealthConfig, down
from .expressions import NamedFigures

__all__ = (
    "ALL_FIGURES",
    "COMPONENT_FIGURES",
    "FIGURE_HELP",
    "FLAP_WINDOW_S",
    "PROCESS_FIGURES",
    "SCOPE_FIGURES",
    "STREAM_FIGURES",
    "SYSTEM_FIGURES",
    "FigureReader",
    "Scope",
    "with_process",
)

Scope = Literal["system", "component", "stream"]

#: Every figure a rule may name, by scope, with what it is (README lists these).
FIGURE_HELP: Final[dict[Scope, dict[str, str]]] = {
    "system": {
        "health_score": "system health score, 0.0 to 1.0",
        "error_rate": "system-wide errors / (processed + errors) over the default window",
        "items_per_second": "items processed per second, system-wide",
        "message_rate": "stream messages per second, system-wide",
        "memory_usage_mb": "resident memory of the endpoint process (null if unknown)",
        "cpu_usage_percent": "CPU of the endpoint process, 100 = one core (null if unknown)",
        "p50": "system-wide latency median in seconds (null when nothing was timed)",
        "p95": "system-wide latency p95 in seconds",
        "p99": "system-wide latency p99 in seconds",
        "components_total": "components known",
        "components_healthy": "components at or above the healthy threshold",
        "components_running": "components running",
        "uptime_seconds": "seconds since the endpoint started",
        "active_spans": "spans started and not ended",
        "expired_spans": "spans given up on after span_timeout_s",
        "rejected_events": "events that could not be folded, since start",
    },
    "component": {
        "error_rate": "errors / (processed + errors) over the default window",
        "items_per_second": "items processed per second over the default window",
        "p50": "latency median in seconds over the default window (null if none timed)",
        "p95": "latency p95 in seconds",
        "p99": "latency p99 in seconds",
        "span_p99": "p99 of its spans' durations in seconds (null if it ended none)",
        "health": "its health score, 0.0 to 1.0",
        "is_healthy": "1 when its score is at or above the healthy threshold, else 0",
        "up": "0 when stopped, failed or silent past heartbeat_timeout_s, else 1",
        "heartbeat_age_s": "seconds since its last heartbeat (null if it never sent one)",
        "processed": "items processed in the default window",
        "errors": "errors in the default window",
        "items_processed": "items processed since start",
        "errors_encountered": "errors since start",
        "breaker_state": ", ".join(f"{code} {state}" for state, code in BREAKER_CODES.items()),
        "breaker_open": "1 while its circuit breaker is open, else 0",
        "breaker_flaps": "breaker state changes in the last 5 minutes",
        "breaker_failure_count": "times its breaker opened, since start",
        "memory_usage_mb": "resident memory of the endpoint process",
        "cpu_usage_percent": "CPU of the endpoint process",
    },
    "stream": {
        "message_rate": "messages per second over the default window",
        "total_messages": "messages since start",
        "buffer_used": "items waiting in the binding (null if unknown)",
        "buffer_size": "capacity of the binding",
        "buffer_ratio": "buffer_used / buffer_size",
        "stalled_seconds": "seconds items have waited with the consumer taking none",
        "consumer_lag": "entries a consumer group has not read yet (transports that know it)",
        "producer_up": "1 while the producing component runs, else 0",
        "consumer_up": "1 while the consuming component runs, else 0",
        "source_up": "1 while the event source feeding it reads, 0 while it cannot "
        "(null for in-process bindings)",
    },
}
SYSTEM_FIGURES: Final = frozenset(FIGURE_HELP["system"])
COMPONENT_FIGURES: Final = frozenset(FIGURE_HELP["component"])
STREAM_FIGURES: Final = frozenset(FIGURE_HELP["stream"])
SCOPE_FIGURES: Final[dict[Scope, frozenset[str]]] = {
    "system": SYSTEM_FIGURES,
    "component": COMPONENT_FIGURES,
    "stream": STREAM_FIGURES,
}
ALL_FIGURES: Final = SYSTEM_FIGURES | COMPONENT_FIGURES | STREAM_FIGURES
#: Breaker state changes are counted over this many seconds for ``breaker_flaps``.
FLAP_WINDOW_S: Final = 300.0
_CLOSED: Final = BreakerStatus("closed", 0, None, 0.0, 0)


#: The component figures that are the process's, every instance's alike.
PROCESS_FIGURES: Final = frozenset({"memory_usage_mb", "cpu_usage_percent"})
#: The component figures a ``FigureReader`` reads itself (the process's are added by
#: ``with_process``), in the order of the values it computes for each instance.
_OWN: Final = tuple(n for n in FIGURE_HELP["component"] if n not in PROCESS_FIGURES)

_Values = tuple[float | None, ...]


#: The attributes of a ``ComponentStatus`` each figure is made of (beside the breaker's
#: and the reader's health config): a status whose attributes for the figures read are
#: equal has the same figures.
_INPUTS: Final[dict[str, tuple[str, ...]]] = {
    "error_rate": ("error_rate",),
    "items_per_second": ("items_per_second",),
    "p50": ("latency.p50",),
    "p95": ("latency.p95",),
    "p99": ("latency.p99",),
    "span_p99": ("span_latency",),
    "health": ("health",),
    "is_healthy": ("is_healthy",),
    "up": ("status", "heartbeat_age_s"),
    "heartbeat_age_s": ("heartbeat_age_s",),
    "processed": ("windows",),
    "errors": ("windows",),
    "items_processed": ("items_processed",),
    "errors_encountered": ("errors_encountered",),
    "breaker_state": (),
    "breaker_open": (),
    "breaker_flaps": (),
    "breaker_failure_count": (),
}


def _inputs(figures: Iterable[str]) -> Callable[[ComponentStatus], object]:
    """What reads a status's inputs of ``figures`` (``_INPUTS``) in one call, to compare."""
    names = list(dict.fromkeys(a for f in figures for a in _INPUTS[f]))
    if not names:
        return lambda c: ()
    return attrgetter(*names)


def _picker(idx: list[int]) -> Callable[[_Values], _Values]:
    """What takes the values at ``idx`` out of an instance's values, as a tuple."""
    if len(idx) == len(_OWN):
        return lambda t: t
    if len(idx) == 1:
        i = idx[0]
        return lambda t: (t[i],)
    if not idx:
        return lambda t: ()
    return itemgetter(*idx)


def with_process(comps: dict[str, NamedFigures], snap: Snapshot) -> dict[str, NamedFigures]:
    """``comps`` (as ``FigureReader.lean_steps`` reads them) with the process's figures
    of ``snap`` in each: new dicts, one per instance."""
    perf = snap.performance
    process = {"memory_usage_mb": perf.memory_usage_mb, "cpu_usage_percent": perf.cpu_usage_percent}
    return {name: {**f, **process} for name, f in comps.items()}


class FigureReader:
    """Reads every instance's named figures from successive snapshots.

    ``breaker_flaps`` counts state changes over the last ``FLAP_WINDOW_S``, which one
    snapshot cannot tell: the reader keeps each breaker's transition counts as it saw
    them, so it reads each evaluated snapshot once, in order.
    """

    def __init__(
        self, health: HealthConfig | None = None, figures: Collection[str] | None = None
    ) -> None:
        self.health = health or HealthConfig()
        own = _OWN if figures is None else tuple(n for n in _OWN if n in figures)
        unknown = set(figures or ()) - COMPONENT_FIGURES
        if unknown:
            raise ValueError(f"unknown component figures {sorted(unknown)}")
        #: The component figures it reads (``figures``: the rules' own, all when None;
        #: the process's aside, which ``with_process`` adds).
        self.figures: tuple[str, ...] = own
        self._pick = _picker([_OWN.index(n) for n in own])
        self._inputs = _inputs(own)
        self._flaps: dict[str, deque[tuple[float, int]]] = {}
        self._evicted = 0
        # Each instance's inputs of the figures read (``_INPUTS``) as last read, the
        # values of those figures (``figures``' order), the dict of them the rules were
        # given, and whether they were read without a breaker (whose figures move with
        # time, so that an instance with one is read again whatever its inputs).
        self._kept: dict[str, tuple[object, _Values, NamedFigures, bool]] = {}
        self.changed: set[str] = set()
        # The instances that came or went at the last read, and by figure those whose
        # value of it moved: what ``changed_for`` answers from.
        self._fresh: set[str] = set()
        self._moved: dict[str, set[str]] = {}
        # The last complete read's component figures, and the token of the snapshot it
        # read (None: none to build on).
        self._comps: dict[str, NamedFigures] | None = None
        self._token: object = None

    def read(self, snap: Snapshot) -> dict[Scope, dict[str, NamedFigures]]:
        """Every instance's named figures, by scope (``FIGURE_HELP`` says what each is).

        Steps the breaker-flap history, so call it once per evaluated snapshot. A reader
        made with ``figures`` gives only those of each component (and the process's)."""
        return finish(self.read_steps(snap, NEVER))

    def read_steps(
        self, snap: Snapshot, pace: Pace, changes: Changes | None = None
    ) -> Steps[dict[Scope, dict[str, NamedFigures]]]:
        """``read()``, yielding where ``pace`` says (``changes``: as ``lean_steps``)."""
        figs = yield from self.lean_steps(snap, pace, changes)
        figs["component"] = with_process(figs["component"], snap)
        return figs

    def lean_steps(
        self, snap: Snapshot, pace: Pace, changes: Changes | None = None
    ) -> Steps[dict[Scope, dict[str, NamedFigures]]]:
        """``read_steps()`` but that the component figures leave out the process's
        (``PROCESS_FIGURES``: ``with_process`` adds them), which every instance shares and
        which move every tick: so that a tick of quiet components leaves theirs alone.

        10,000 changed components take long enough to stall the loop. ``changes``: which
        components' statuses are new against the snapshot read last; when it names that
        one, only those components (and those with a breaker, whose figures move with
        time) are read again."""
        now = snap.uptime_seconds
        perf = snap.performance
        mem, cpu = perf.memory_usage_mb, perf.cpu_usage_percent
        wkey = f"{perf.window_seconds}s"
        system: dict[str, float | None] = {
            "health_score": snap.health_score,
            "error_rate": perf.error_rate,
            "items_per_second": perf.items_per_second,
            "message_rate": perf.message_rate,
            "memory_usage_mb": mem,
            "cpu_usage_percent": cpu,
            "p50": perf.latency.p50,
            "p95": perf.latency.p95,
            "p99": perf.latency.p99,
            "components_total": float(snap.components.total),
            "components_healthy": float(snap.components.healthy),
            "components_running": float(snap.components.running),
            "uptime_seconds": snap.uptime_seconds,
            "active_spans": float(snap.traces.active_spans),
            "expired_spans": float(snap.traces.expired_spans),
            "rejected_events": float(sum(snap.rejected.values())),
        }
        health = self.health
        breakers = snap.circuit_breakers
        flaps = self._flaps
        comps: dict[str, NamedFigures]
        kept = self._kept
        pick, own, inputs = self._pick, self.figures, self._inputs
        fresh: set[str] = set()
        # The instances whose values moved, by which of them moved (a tuple of bools in
        # ``own``'s order): a few patterns among thousands of instances.
        moves: dict[tuple[bool, ...], list[str]] = {}
        details = snap.detailed_components
        last, self._comps = self._comps, None  # until this read is complete
        since, self._token = self._token, None
        todo: Sequence[str]
        if changes is not None and since is not None and changes.since is since and last:
            comps = dict(last)
            todo = changes.names
            if breakers or flaps:
                todo = list(dict.fromkeys((*todo, *breakers, *flaps)))
        else:
            comps = {}
            todo = list(details)
        whole = not comps  # every instance to be put in comps; else it holds the rest
        for due, part in pace.parts(todo):
            if due:
                yield
            for name in part:
                c = details.get(name)
                k = kept.get(name)
                if c is None:  # gone from the statuses
                    if k is not None:
                        del kept[name]
                        comps.pop(name, None)
                        fresh.add(name)
                    continue
                plain = name not in breakers and name not in flaps
                raw = inputs(c)
                if k is not None and plain and k[3] and raw == k[0]:
                    # What the figures read are made of is as it was (an idle component's
                    # status, or a busy one's whose rates move but whose error rate, state
                    # and quantiles do not): the same figures, and no rule need test it.
                    if whole:
                        comps[name] = k[2]
                    continue
                b = breakers.get(name, _CLOSED)
                bs = b.state
                hb = c.heartbeat_age_s
                lat = c.latency
                w = c.windows.get(wkey)
                # In _OWN's order (FIGURE_HELP's); ``pick`` keeps those the rules read.
                values = pick(
                    (
                        c.error_rate,
                        c.items_per_second,
                        lat.p50,
                        lat.p95,
                        lat.p99,
                        c.span_latency.p99 if c.span_latency is not None else None,
                        c.health,
                        1.0 if c.is_healthy else 0.0,
                        0.0 if down(c.status, hb, health) is not None else 1.0,
                        hb,
                        w.processed if w is not None else None,
                        w.errors if w is not None else None,
                        c.items_processed,
                        c.errors_encountered,
                        float(BREAKER_CODES[bs]),
                        1.0 if bs == "open" else 0.0,
                        (
                            self._flap_count(name, b.transitions, now)
                            if b.transitions or name in flaps
                            else 0.0
                        ),
                        b.failure_count,
                    )
                )
                if k is None:
                    fresh.add(name)
                    built: NamedFigures = dict(zip(own, values, strict=True))
                elif values == k[1]:
                    built = k[2]  # other inputs, the same figures: none moved
                else:
                    moves.setdefault(tuple(map(ne, values, k[1])), []).append(name)
                    built = dict(zip(own, values, strict=True))
                comps[name] = built
                kept[name] = (raw, values, built, plain)
        if len(kept) > len(comps):  # components gone (evicted): their instances changed
            for gone in [n for n in kept if n not in comps]:
                del kept[gone]
                fresh.add(gone)
        moved: dict[str, set[str]] = {n: set() for n in own}
        changed = set(fresh)
        for pattern, names in moves.items():
            changed.update(names)
            for figure, move in zip(own, pattern, strict=True):
                if move:
                    moved[figure].update(names)
        #: The component instances whose figures differ from the previous read (their
        #: process figures aside; at the first read, all): a rule that reads no process
        #: figure need test only these again (``changed_for``: only those whose figures
        #: it reads moved).
        self.changed = changed
        self._fresh, self._moved = fresh, moved
        self._comps = comps
        self._token = changes.token if changes is not None else None
        if snap.components_evicted != self._evicted:  # forget the evicted ones' flaps
            self._evicted = snap.components_evicted
            for name in [n for n in flaps if n not in snap.detailed_components]:
                del flaps[name]
        streams: dict[str, NamedFigures] = {}
        details = snap.detailed_components
        for key, st in snap.streaming.streams.items():
            used, size = st.buffer_used, st.buffer_size
            prod = details.get(st.from_component) if st.from_component is not None else None
            cons = details.get(st.to_component) if st.to_component is not None else None
            streams[key] = {
                "message_rate": st.message_rate,
                "total_messages": st.total_messages,
                "buffer_used": used,
                "buffer_size": size,
                "buffer_ratio": used / size if used is not None and size else None,
                "stalled_seconds": st.stalled_seconds,
                "consumer_lag": st.consumer_lag,
                "producer_up": None if prod is None else float(prod.status == "running"),
                "consumer_up": None if cons is None else float(cons.status == "running"),
                "source_up": None if st.source_up is None else float(st.source_up),
            }
        return {"system": {"system": system}, "component": comps, "stream": streams}

    def changed_for(self, figures: Iterable[str]) -> set[str]:
        """The component instances of the last read whose values of ``figures`` differ
        from the read before (those that came or went with them): all a rule reading
        only ``figures`` need test again. ``changed`` when one of them is not read (the
        process's). The set may be the reader's own: read it, do not change it."""
        moved = self._moved
        out = self._fresh
        for figure in figures:
            more = moved.get(figure)
            if more is None:
                return self.changed
            if more:
                out = out | more if out else more
        return out

    def _flap_count(self, name: str, transitions: int, now: float) -> float:
        """State changes of ``name``'s breaker within the last FLAP_WINDOW_S, from the
        transition counts seen at each evaluation."""
        hist = self._flaps.get(name)
        if hist is None:
            if not transitions:
                return 0.0  # the common case: a breaker that never moved
            hist = self._flaps[name] = deque()
        if hist and transitions < hist[-1][1]:
            hist.clear()  # fewer than before: a new breaker under an evicted one's name
        if not hist or hist[-1][1] != transitions:
            hist.append((now, transitions))
        while len(hist) > 1 and hist[1][0] <= now - FLAP_WINDOW_S:
            hist.popleft()
        return float(transitions - hist[0][1]) if len(hist) > 1 else 0.0
