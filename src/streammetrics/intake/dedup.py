"""The dedup window: an event id seen again within the window is folded once.

Why here and bounded: transports from outside the process deliver at least once (an HTTP
client retries a batch whose answer was lost; a Redis consumer re-reads the entries it
had not acknowledged when its connection dropped), so the same event may arrive twice.
Producers that set ``Event.id`` make that harmless. The window forgets ids by count and
by age, so its memory is bounded whatever the traffic: ``max_ids`` ids at most.

The window lives as long as the aggregates it protects: a restarted endpoint starts with
empty aggregates and an empty window, which is exactly right for re-delivered entries
that the dead process had folded but not acknowledged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import msgspec

from ..model.events import Event
from .config import DedupConfig

__all__ = ("DedupStatistics", "DedupWindow")


class DedupStatistics(msgspec.Struct, frozen=True):
    ids: int
    """Ids remembered now."""
    checked: int
    """Events with an id that went through the window."""
    duplicates: int
    """Events whose id was already in the window (not folded)."""
    max_ids: int
    max_age_s: float


class DedupWindow:
    """Remembers the last ``max_ids`` event ids, each for ``max_age_s`` seconds.

    O(1) per event: a set for membership, a FIFO of ids for eviction by count, and a FIFO
    of (time, ids added) per call for eviction by age.
    """

    def __init__(
        self, config: DedupConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or DedupConfig()
        self.clock = clock
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._batches: deque[tuple[float, int]] = deque()
        self._checked = 0
        self._duplicates = 0

    @property
    def enabled(self) -> bool:
        return self.config.max_ids > 0

    def filter(self, events: Sequence[Event]) -> tuple[list[Event], list[int]]:
        """The events to fold, and the indices (into ``events``) of the duplicates.

        Ids are remembered as they pass, so a repeat inside ``events`` itself is caught
        too. Events without an id always pass.
        """
        if not self.enabled:
            return list(events), []
        now = self.clock()
        self._expire(now)
        seen = self._seen
        order = self._order
        fresh: list[Event] = []
        dups: list[int] = []
        added = 0
        for i, ev in enumerate(events):
            eid = ev.id
            if eid is None:
                fresh.append(ev)
                continue
            if eid in seen:
                dups.append(i)
                continue
            seen.add(eid)
            order.append(eid)
            added += 1
            fresh.append(ev)
        if added:
            self._checked += added
            self._batches.append((now, added))
            self._trim()
        self._checked += len(dups)
        self._duplicates += len(dups)
        return fresh, dups

    def _expire(self, now: float) -> None:
        limit = now - self.config.max_age_s
        batches = self._batches
        order = self._order
        seen = self._seen
        while batches and batches[0][0] < limit:
            _t, n = batches.popleft()
            for _ in range(min(n, len(order))):
                seen.discard(order.popleft())

    def _trim(self) -> None:
        order = self._order
        seen = self._seen
        batches = self._batches
        excess = len(order) - self.config.max_ids
        while excess > 0 and batches:
            t, n = batches[0]
            k = min(n, excess)
            for _ in range(k):
                seen.discard(order.popleft())
            excess -= k
            if k == n:
                batches.popleft()
            else:
                batches[0] = (t, n - k)

    def statistics(self) -> DedupStatistics:
        return DedupStatistics(
            ids=len(self._seen),
            checked=self._checked,
            duplicates=self._duplicates,
            max_ids=self.config.max_ids,
            max_age_s=self.config.max_age_s,
        )
