"""Where events from outside the process enter an endpoint's aggregates.

HTTP ingest and the Redis consumer share one ``Intake`` per endpoint, so they share its
dedup window (an event that arrives both ways is folded once) and count what they could
not fold the same way, in ``streammetrics_events_rejected_total{reason}``:
``malformed`` (an event, or a whole body, that does not decode, or an event whose
component or stream name breaks the name rule, ``types.name_problem``), ``duplicate`` (an id
already folded within the dedup window), ``cardinality`` (the aggregator's own limit),
``trimmed`` (a stream entry that was gone before it could be read), ``lifecycle`` (a
``started`` or ``stopped`` event from a source whose ``lifecycle`` is ``refuse``). Every
rejection goes through here, none around it, so the intake's own figures and the counter
agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ..errors import EventError
from ..model.events import Event, Format, Rejection, decode_events
from ..model.types import name_problem
from .config import LIFECYCLE_KINDS, Lifecycle
from .dedup import DedupWindow

if TYPE_CHECKING:
    from ..aggregator import Aggregator

__all__ = ("Intake", "IntakeResult", "IntakeStatistics")

#: How many names that passed the name rule an intake remembers, so that a producer
#: sending ever new names cannot grow it without bound (past it, new names are checked
#: again on every body: correct, only slower). The aggregator's own limits are 10,000
#: components and 10,000 streams by default.
MAX_CHECKED_NAMES: Final = 50_000


class IntakeResult(msgspec.Struct, frozen=True):
    """What became of one body (or batch) of events."""

    accepted: int
    """Events folded."""
    rejected: int
    """Events that could not be folded; each is in ``rejections``."""
    duplicates: int
    """Events not folded again because their id already was (a retry, a re-delivery)."""
    rejections: list[Rejection]
    """Index (into the body's events), path and reason of each rejected event."""
    malformed: int = 0
    """Of the rejected, how many were not valid events (the others hit a limit or were
    refused by policy)."""


class IntakeStatistics(msgspec.Struct, frozen=True):
    bodies: int
    """Bodies (requests, stream entries) that reached the intake."""
    unreadable: int
    """Bodies rejected whole: neither an event, a list nor a batch, or no body at all
    (a stream entry without an events field)."""
    accepted: int
    rejected: int
    """Events, and bodies rejected whole, that could not be folded (duplicates apart)."""
    duplicates: int
    trimmed: int = 0
    """Bodies that were gone before they could be read (of the rejected)."""
    lifecycle: int = 0
    """``started``/``stopped`` events refused by a ``lifecycle: refuse`` source (of the
    rejected)."""


class Intake:
    """Decode, dedup and fold, counting every event that does not make it."""

    def __init__(self, aggregator: Aggregator, dedup: DedupWindow | None = None) -> None:
        self.aggregator = aggregator
        self.dedup = dedup
        self._bodies = self._unreadable = self._trimmed = self._lifecycle = 0
        self._accepted = self._rejected = self._duplicates = 0
        self._names: set[str | None] = {None}  # names that passed the rule (None: no stream)

    def fold_body(
        self,
        data: bytes,
        fmt: Format,
        *,
        lifecycle: Lifecycle = "accept",
        setting: str = "lifecycle",
    ) -> IntakeResult:
        """Fold one body (an event, a list, or ``{"events": [...]}``).

        With ``lifecycle="refuse"`` each ``started``/``stopped`` event is rejected on
        its own (``setting`` is the config key the reason names) and the rest fold.
        Raises ``EventError`` naming the path when the body as a whole is unreadable;
        that body is counted as one ``malformed`` rejection.
        """
        self._bodies += 1
        try:
            decoded = decode_events(data, fmt)
        except EventError:
            self._count_unreadable()
            raise
        events, bad = self._named(decoded.events, decoded.rejected)
        if bad:
            self.aggregator.reject("malformed", len(bad))
        refused: list[Rejection] = []
        if lifecycle == "refuse" and any(ev.kind in LIFECYCLE_KINDS for ev in events):
            events, refused = self._refuse_lifecycle(events, bad, setting)
        return self._fold(events, bad, refused)

    def _named(
        self, events: list[Event], bad: list[Rejection]
    ) -> tuple[list[Event], list[Rejection]]:
        """The events whose component and stream names keep the name rule, and the
        rejections with one added (at its body index) for each event that breaks it.

        The rule is checked once per new name, not per event: a body's names are
        gathered into a set and compared with those already checked, so a body of known
        names costs two set comprehensions over its events (about 5 % of decoding and
        folding it) and nothing else. A ``pattern=`` on ``Name`` would cost more than
        decoding itself.
        """
        known = self._names
        names: set[str | None] = {ev.component for ev in events}
        names |= {ev.stream for ev in events}  # two comprehensions: the quickest way found
        if names <= known:
            return events, bad
        refused: dict[str, str] = {}
        for name in names - known:
            if name is None:  # never: None is known from the start
                continue
            problem = name_problem(name)
            if problem is not None:
                refused[name] = problem
            elif len(known) < MAX_CHECKED_NAMES:
                known.add(name)
        if not refused:
            return events, bad
        where = _positions(len(events), bad)
        good: list[Event] = []
        out = list(bad)
        for k, ev in enumerate(events):
            field, problem = "component", refused.get(ev.component)
            if problem is None and ev.stream is not None:
                field, problem = "stream", refused.get(ev.stream)
            if problem is None:
                good.append(ev)
            else:
                out.append(Rejection(where[k], f"events[{where[k]}].{field}", problem))
        out.sort(key=lambda r: r.index)
        return good, out

    def _refuse_lifecycle(
        self, events: list[Event], bad: list[Rejection], setting: str
    ) -> tuple[list[Event], list[Rejection]]:
        """The events to fold, and a rejection (by body index) for each lifecycle event.

        Refused before dedup: a refused event's id is not remembered, so its retry is
        refused the same way rather than counted as a duplicate."""
        kept: list[Event] = []
        refused: list[Rejection] = []
        for i, ev in zip(_positions(len(events), bad), events, strict=True):
            if ev.kind in LIFECYCLE_KINDS:
                refused.append(
                    Rejection(
                        i,
                        f"events[{i}].kind",
                        f"{ev.kind!r} events from outside the process are refused "
                        f"({setting}: refuse): a component's run state is not set from here",
                    )
                )
            else:
                kept.append(ev)
        self._lifecycle += len(refused)
        self.aggregator.reject("lifecycle", len(refused))
        return kept, refused

    def refuse_body(self, reason: str, *, value: Any = None) -> EventError:
        """Count a body rejected whole before decoding (a stream entry with no events
        field) as ``fold_body`` counts one that does not decode: one ``malformed``
        rejection. Returns the error naming it, for the caller to log."""
        self._bodies += 1
        self._count_unreadable()
        return EventError(reason, path="$", value=value)

    def lost(self, n: int) -> None:
        """Count ``n`` bodies that were gone before they could be read (stream entries
        trimmed or deleted while pending): ``trimmed`` rejections."""
        if n <= 0:
            return
        self._bodies += n
        self._trimmed += n
        self._rejected += n
        self.aggregator.reject("trimmed", n)

    def _count_unreadable(self) -> None:
        self._unreadable += 1
        self._rejected += 1
        self.aggregator.reject("malformed")

    def _fold(
        self, events: Sequence[Event], bad: list[Rejection], refused: Sequence[Rejection] = ()
    ) -> IntakeResult:
        dups: list[int] = []
        fresh: Sequence[Event] = events
        if self.dedup is not None and self.dedup.enabled:
            fresh, dups = self.dedup.filter(events)
            if dups:
                self.aggregator.reject("duplicate", len(dups))
        rejections = [*bad, *refused]
        if refused:
            rejections.sort(key=lambda r: r.index)
        folded_rejects = self.aggregator.fold_events(fresh)
        if folded_rejects:
            # Answers index the body: map folded events back past the bad, the refused
            # and the dups.
            skip = set(dups)
            where = _positions(len(events), rejections)
            fresh_where = [b for k, b in enumerate(where) if k not in skip]
            for r in folded_rejects:
                i = fresh_where[r.index]
                field = r.path.rpartition(".")[2]
                rejections.append(Rejection(i, f"events[{i}].{field}", r.reason))
            rejections.sort(key=lambda r: r.index)
        accepted = len(fresh) - len(folded_rejects)
        self._accepted += accepted
        self._rejected += len(rejections)
        self._duplicates += len(dups)
        limited = sum(r.path.endswith(".component") for r in folded_rejects)
        return IntakeResult(
            accepted,
            len(rejections),
            len(dups),
            rejections,
            len(rejections) - limited - len(refused),
        )

    def statistics(self) -> IntakeStatistics:
        return IntakeStatistics(
            bodies=self._bodies,
            unreadable=self._unreadable,
            accepted=self._accepted,
            rejected=self._rejected,
            duplicates=self._duplicates,
            trimmed=self._trimmed,
            lifecycle=self._lifecycle,
        )


def _positions(good: int, bad: list[Rejection]) -> list[int]:
    """Body index of each decoded event: decoding left the bad ones out."""
    skip = {r.index for r in bad}
    out: list[int] = []
    i = 0
    while len(out) < good:
        if i not in skip:
            out.append(i)
        i += 1
    return out
