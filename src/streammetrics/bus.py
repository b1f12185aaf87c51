"""The event bus: where probes and external producers hand their reports to the sinks.

Folding is synchronous and on the caller's thread (the event loop): a sink is an
in-memory aggregate, so there is nothing to wait for, and one thread owning the
aggregates needs no locks. Probes are pulled on the bus's tick (``flush``), never
pushed per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from .buckets import DEFAULT_LADDER, Ladder
from .model.events import Delta, Event, Rejection
from .probe import Probe
from .steps import BUDGET_S, NEVER, Pace, Steps, finish, finish_async

__all__ = ("BusStatistics", "EventBus", "Sink")


class Sink(Protocol):
    """Something that folds reports: an ``Aggregator``, or a test's recorder."""

    def fold_events(self, events: Sequence[Event]) -> list[Rejection]: ...

    def fold_deltas(self, deltas: Sequence[Delta]) -> None: ...


class BusStatistics(msgspec.Struct, frozen=True):
    probes: int
    sinks: int
    flushes: int
    events_published: int
    deltas_published: int


class EventBus:
    """Fan-out from probes and producers to every subscribed sink."""

    def __init__(self, ladder: Ladder | None = None) -> None:
        """``ladder``: the latency buckets its probes count in, which every aggregator
        subscribed here must share (default: the √2 ladder with prometheus-client's
        default buckets)."""
        #: The latency buckets of this bus's probes and of the aggregators it feeds.
        self.ladder = ladder if ladder is not None else DEFAULT_LADDER
        self._sinks: list[Sink] = []
        self._probes: dict[str, Probe] = {}
        self._flushes = 0
        self._events = 0
        self._deltas = 0

    def subscribe(self, sink: Sink) -> None:
        """Fold into ``sink`` from now on. A sink with a ``ladder`` (an ``Aggregator``)
        must count in this bus's: its probes' deltas come bucketed in it."""
        ladder = getattr(sink, "ladder", None)
        if isinstance(ladder, Ladder) and ladder != self.ladder:
            raise ValueError(
                f"the sink counts latencies in {ladder!r} and this bus in {self.ladder!r}: "
                "make the aggregator with ladder=bus.ladder"
            )
        self._sinks.append(sink)
        self._set_timing(True)

    def unsubscribe(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
        if not self._sinks:
            self._set_timing(False)

    def _set_timing(self, on: bool) -> None:
        """Probes measure latency only while a sink listens (their counts, always)."""
        for p in self._probes.values():
            p.timing = on

    def probe(self, component: str) -> Probe:
        """The probe of ``component`` (one per name, made on first ask)."""
        p = self._probes.get(component)
        if p is None:
            p = self._probes[component] = Probe(
                component, timing=bool(self._sinks), bounds=self.ladder.bounds
            )
        return p

    def publish(self, events: Sequence[Event]) -> list[Rejection]:
        """Fold events into every sink; returns the rejections of the first sink."""
        self._events += len(events)
        rejected: list[Rejection] | None = None
        for sink in self._sinks:
            r = sink.fold_events(events)
            if rejected is None:
                rejected = r
        return rejected or []

    def publish_deltas(self, deltas: Sequence[Delta]) -> None:
        self._deltas += len(deltas)
        for sink in self._sinks:
            sink.fold_deltas(deltas)

    def flush(self) -> None:
        """Pull every probe's counts into the sinks."""
        finish(self.flush_steps(NEVER))

    async def flush_async(self) -> None:
        """``flush`` on the event loop, letting it in every ``steps.BUDGET_S`` (what the
        periodic flushers call).

        Why not ``flush``: every probe is walked at every flush whether or not it counted
        anything, and 10,000 of them held the loop 4 to 9 ms ten times a second."""
        pace = Pace(0, BUDGET_S)
        await finish_async(self.flush_steps(pace), pace)

    def flush_steps(self, pace: Pace) -> Steps[None]:
        """``flush`` as steps: the probes in parts, each part's deltas folded into the
        sinks before the next (so a yield never leaves counts taken from a probe and not
        yet folded), yielding where ``pace`` says. A probe made meanwhile is flushed
        next time."""
        self._flushes += 1
        for due, part in pace.parts(list(self._probes.values())):
            if due:
                yield
            deltas: list[Delta] = []
            for p in part:
                deltas += p.flush()
            if deltas:
                self.publish_deltas(deltas)

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            probes=len(self._probes),
            sinks=len(self._sinks),
            flushes=self._flushes,
            events_published=self._events,
            deltas_published=self._deltas,
        )
