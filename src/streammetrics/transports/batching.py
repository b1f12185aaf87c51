"""The one batcher of every sender (``EventClient``, ``EventPublisher`` and their async
twins): the buffer, the ids, when a batch is due, and what becomes of events a send did
not deliver.

One, because the rules are the same whatever carries the events, and a second copy is
where they drift apart:

- every event without an id gets one (``<sender prefix>-<sequence>``), so a resent
  batch whose first copy did arrive is folded once (the endpoint's dedup window);
- a batch is due when ``batch_size`` events wait, or ``flush_interval_s`` after the
  first of them;
- a flush takes the whole buffer and sends it in flights (what one request carries: one
  batch over HTTP, every batch in one pipelined round trip to Redis). Whatever ends a
  flush early, the flights not delivered go back to the front of the buffer, in order:
  a cancellation or a ``KeyboardInterrupt`` puts back the flight in the air too (it may
  not have arrived; if it did, its ids make the resend harmless), a ``DeliveryError``
  hands that flight to the caller in the error and puts back the ones after it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Self

import msgspec

from ..errors import DeliveryError
from ..model.events import Event
from .retry import Failure

__all__ = ("Batcher", "Flights")


class Batcher:
    """Buffers events until a batch is due, and counts what became of them."""

    def __init__(
        self,
        name: str,
        *,
        batch_size: int,
        flush_interval_s: float,
        assign_ids: bool,
        clock: Callable[[], float],
        flight_batches: int | None = 1,
    ) -> None:
        """``name`` says whose batcher it is in errors (``the event client for URL``);
        ``flight_batches`` is how many batches one request carries (None: all)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s!r}")
        self.name = name
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.assign_ids = assign_ids
        self.clock = clock
        self.flight_batches = flight_batches
        self.prefix = secrets.token_hex(6)
        self.seq = 0
        self.buffer: list[Event] = []
        self.first_at: float | None = None
        self.closed = False
        self.batches = 0
        """Batches delivered (HTTP requests answered 200, stream entries written)."""
        self.events = 0
        """Events delivered."""
        self.retries = 0
        """Attempts beyond the first, over all flights."""
        self.failed = 0
        """Flights that ended in a ``DeliveryError``."""
        self.dropped = 0
        """Events a periodic flush could not hand to anyone: the peer refused them."""

    def add(self, events: Iterable[Event]) -> None:
        """Buffer events, giving each without an id one; a closed sender refuses them."""
        if self.closed:
            raise RuntimeError(f"{self.name} is closed")
        buf = self.buffer
        if not buf:
            self.first_at = self.clock()
        if self.assign_ids:
            replace = msgspec.structs.replace
            prefix = self.prefix
            for ev in events:
                if ev.id is None:
                    self.seq += 1
                    ev = replace(ev, id=f"{prefix}-{self.seq:x}")
                buf.append(ev)
        else:
            buf.extend(events)

    def due(self) -> bool:
        """A full batch waits, or the oldest waiting event has waited the interval."""
        if len(self.buffer) >= self.batch_size:
            return True
        return bool(self.buffer) and (
            self.first_at is not None and self.clock() - self.first_at >= self.flush_interval_s
        )

    def chunks(self, events: list[Event]) -> list[list[Event]]:
        """``events`` in batches of at most ``batch_size``."""
        n = self.batch_size
        return [events[i : i + n] for i in range(0, len(events), n)]

    def flights(self, *, keep_failed: bool = False) -> Flights:
        """The flights of one flush, taken from the buffer when the ``with`` block is
        entered. ``keep_failed``: a flight whose retries are spent goes back to the
        buffer too (a periodic flush, which has no caller to hand it to)."""
        return Flights(self, keep_failed=keep_failed)

    def restore(self, flights: list[list[Event]]) -> None:
        """Put flights that were not delivered back at the front of the buffer, in order."""
        if not flights:
            return
        self.buffer[:0] = [ev for flight in flights for ev in flight]
        self.first_at = self.clock()


class Flights:
    """The buffer of one flush, handed out a flight at a time (``for flight in flights``
    inside ``with flights``); the sender calls ``delivered`` or ``failed`` for each.
    Leaving the block puts back what was not delivered (see the module's docstring)."""

    def __init__(self, batcher: Batcher, *, keep_failed: bool) -> None:
        self._batcher = batcher
        self._keep_failed = keep_failed
        self._flights: list[list[Event]] = []
        self._done = 0
        self._error: DeliveryError | None = None
        self.kept = False
        """Whether the flight of the ``DeliveryError`` went back to the buffer."""

    def __enter__(self) -> Self:
        b = self._batcher
        events, b.buffer, b.first_at = b.buffer, [], None
        batches = b.chunks(events)
        step = b.flight_batches or len(batches) or 1
        self._flights = [
            [ev for batch in batches[i : i + step] for ev in batch]
            for i in range(0, len(batches), step)
        ]
        return self

    def __iter__(self) -> Iterator[list[Event]]:
        return iter(self._flights[self._done :])

    def delivered(self, flight: list[Event]) -> None:
        """The flight arrived: counted, and not put back whatever happens next."""
        b = self._batcher
        self._done += 1
        b.batches += -(-len(flight) // b.batch_size)
        b.events += len(flight)

    def failed(self, error: DeliveryError, failure: Failure) -> DeliveryError:
        """The flight is given up on: returns ``error`` (with the flight's events) to
        raise. With ``keep_failed``, a flight another try may still deliver is put back
        instead; one the peer refused is dropped (counted in ``dropped``)."""
        b = self._batcher
        b.failed += 1
        self._error = error
        self.kept = self._keep_failed and not failure.final
        if self._keep_failed and failure.final:
            b.dropped += len(error.events)
        return error

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        handed_out = 1 if exc is self._error and not self.kept else 0
        self._batcher.restore(self._flights[self._done + handed_out :])
