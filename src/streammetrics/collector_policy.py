"""How a MetricsEndpoint manages the process's garbage collector: freeze after a tick,
thaw now and then.

CPython's cycle collector walks every object it tracks in its oldest generation on a full
(generation 2) pass. At 10,000 components that is some 200,000 long-lived objects (the
windows' arrays and lists, the kept figures and judgements), and a pass over them holds
the event loop for 100 to 250 ms, whenever one comes due, mid-tick or mid-request. Those
objects are not garbage and hold no reference cycles: they are freed by reference
counting when their component goes, so walking them finds nothing.

``CollectorPolicy.after_tick`` therefore moves them out of the collector's reach with
``gc.freeze()``: what is alive then goes to the permanent generation, which no pass
walks. What is made afterwards is still collected as ever, and a frozen object that loses
its last reference is still freed at once. What freezing costs: an object alive at a
freeze that later becomes garbage *inside a reference cycle* is not reclaimed while it
stays frozen, and a request in flight is made of such cycles (freezing after every tick
pinned some 60 objects per request served). So the policy freezes seldom:

- every ``thaw_s`` (and at the first tick): unfreeze, one full collection, freeze. That
  reclaims what the previous freeze pinned, and is the one full pass over the whole heap
  left: one long pause per ``thaw_s`` (right after a tick, when the loop has just done its
  work) instead of one every few seconds under load;
- after a tick that followed a full collection the collector ran by itself (the tables
  grew: components came): freeze what it kept, so that the next one does not walk it
  again.

What stays pinned at any time is what was alive at the last freezes and has since died in
a cycle: the requests in flight at those few instants, for at most ``thaw_s``.

The collector is the process's, not the endpoint's: the policy only acts from the
endpoint's lifecycle (never at import), does nothing with ``freeze: false``, and leaves the
collector unfrozen when the last endpoint that froze it stops (several endpoints in one
process share it: the first to stop must not take the others' freeze away).
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Callable
from typing import Annotated, ClassVar

import msgspec

__all__ = ("CollectorConfig", "CollectorPolicy", "CollectorStatistics")


class CollectorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The garbage-collector policy of a MetricsEndpoint (its ``config.gc``)."""

    freeze: bool = True
    """Move the endpoint's long-lived tables into the collector's permanent generation
    (``gc.freeze()``, at the first tick, every ``thaw_s`` and after a full collection
    the collector ran by itself), so that full collections stop walking them; false
    leaves the process's collector alone."""
    thaw_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    """Every this many seconds (checked after a tick): unfreeze, run one full collection
    (it reclaims reference cycles that became garbage while frozen) and freeze again."""


class CollectorStatistics(msgspec.Struct, frozen=True):
    """What the policy did since it was made."""

    freezes: int
    """``gc.freeze()`` calls."""
    full_collections: int
    """Full collections it ran itself, each after unfreezing (one per ``thaw_s``)."""
    frozen_objects: int
    """Objects in the permanent generation when the policy last thawed and froze it
    again (``gc.get_freeze_count()`` then, right after its own full collection; 0 once
    it unfroze it at ``close``). Not counted when read, nor at a freeze after a full
    collection the collector ran by itself: counting walks every frozen object (15 ms
    at 10,000 components), too long for every ``/metrics`` render or a tick, while
    beside the policy's own full collection (hundreds of ms) it is nothing."""
    last_full_collection_ms: float | None
    """How long the last of those took; null before the first."""


def _full_passes() -> int:
    """Full (generation 2) collections the collector has run, by itself or asked."""
    return int(gc.get_stats()[2]["collections"])


class CollectorPolicy:
    """Freezes the process's collector as ``CollectorConfig`` says, from an endpoint's
    ticks; ``clock`` is monotonic seconds (tests pass their own)."""

    #: The policies that froze the collector and have not been closed: the process's
    #: collector is unfrozen when the last of them closes. Weak, so that a policy
    #: dropped without ``close`` (an endpoint never run to its end) holds nothing.
    _holding: ClassVar[weakref.WeakSet[CollectorPolicy]] = weakref.WeakSet()

    def __init__(
        self, config: CollectorConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or CollectorConfig()
        self._clock = clock
        self._thawed_at: float | None = None
        self._passes = 0  # _full_passes() at the last freeze
        self._freezes = 0
        self._collections = 0
        self._last_ms: float | None = None
        self._frozen = 0  # gc.get_freeze_count() at the last thaw

    def after_tick(self) -> None:
        """Call once a tick's snapshot is built: unfreeze, collect and freeze when
        ``thaw_s`` has passed since that was last done (or at the first call); else
        freeze if the collector ran a full collection by itself since the last freeze."""
        if not self.config.freeze:
            return
        now = self._clock()
        thawed = self._thawed_at is None or now - self._thawed_at >= self.config.thaw_s
        if thawed:
            gc.unfreeze()
            t0 = time.perf_counter()
            gc.collect()
            self._last_ms = (time.perf_counter() - t0) * 1000
            self._collections += 1
            self._thawed_at = now
        elif _full_passes() == self._passes:
            return
        gc.freeze()
        if thawed:  # just after its own full collection
            self._frozen = gc.get_freeze_count()
        self._freezes += 1
        self._passes = _full_passes()
        CollectorPolicy._holding.add(self)

    def close(self) -> None:
        """The endpoint stops: hand the collector back unfrozen (its next full pass
        walks, and reclaims, everything again), unless another endpoint's policy still
        holds it frozen: that one unfreezes when it closes."""
        holding = CollectorPolicy._holding
        if self in holding:
            holding.discard(self)
            if not holding:
                gc.unfreeze()
                self._frozen = 0
        self._thawed_at = None

    def statistics(self) -> CollectorStatistics:
        return CollectorStatistics(
            freezes=self._freezes,
            full_collections=self._collections,
            frozen_objects=self._frozen,
            last_full_collection_ms=self._last_ms,
        )
