"""What every batching sender shares (``EventClient``, ``EventPublisher`` and their async
twins): the flush loop with its retries, the periodic flush, and the lifecycle.

A sender says only what is its own: how a flight is encoded (``_encode``), one attempt
at delivering it (``_attempt``, a result or a ``Failure``), the ``DeliveryError`` for a
flight given up on (``_error``), and what it releases on close. The rest is here once:

- a flush tries each flight, and while the failure is one another try may fix, waits the
  policy's next delay (or the peer's ``Retry-After``) and tries again;
- what a flush did not deliver goes back to the buffer (``batching.Flights``);
- closing flushes what is still batched, then releases the connection the sender owns,
  even when that last flush fails; a closed sender refuses new events.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio

from ..errors import DeliveryError
from ..model.events import Event
from .batching import Batcher, Flights
from .retry import Failure, RetryPolicy

__all__ = ("AsyncSender", "Sender")

P = TypeVar("P")
"""What a flight is encoded to once, for every attempt (a body, stream entries)."""
R = TypeVar("R")
"""What delivering one flight yields (the endpoint's answer, entries written)."""


class _Parts(Generic[P, R]):
    """The parts of a sender that do no I/O, shared by the sync and the async base."""

    def __init__(
        self, batcher: Batcher, retry: RetryPolicy | None, log: logging.Logger, peer: str
    ) -> None:
        self._batcher = batcher
        self._retry = retry or RetryPolicy()
        self._log = log
        self._peer = peer

    def _encode(self, flight: list[Event]) -> P:
        raise NotImplementedError

    def _error(self, flight: list[Event], failure: Failure) -> DeliveryError:
        raise NotImplementedError

    def _backoff(self, delay: float, failure: Failure, flight: list[Event]) -> float:
        """Seconds to wait before the next try of ``flight``; counts the retry."""
        wait = self._retry.wait(delay, failure)
        self._log.debug(
            "retrying a batch of %d events to %s in %.3fs: %s",
            len(flight),
            self._peer,
            wait,
            failure.why,
        )
        self._batcher.retries += 1
        return wait

    def _given_up(self, flights: Flights, flight: list[Event], failure: Failure) -> DeliveryError:
        return flights.failed(self._error(flight, failure), failure)


class Sender(_Parts[P, R]):
    """Base of a synchronous sender: ``close()`` and ``with``."""

    def _attempt(self, payload: P, flight: list[Event]) -> R | Failure:
        raise NotImplementedError

    def _release(self) -> None:
        """Close what the sender owns (not a connection it was handed)."""

    def flush(self) -> Any:
        raise NotImplementedError

    def _send(self, flights: Flights) -> list[R]:
        """Deliver the flights in order, each with retries; what one delivered yields."""
        out: list[R] = []
        with flights:
            for flight in flights:
                payload = self._encode(flight)
                outcome = self._attempt(payload, flight)
                for delay in self._retry.delays():
                    if not isinstance(outcome, Failure) or outcome.final:
                        break
                    time.sleep(self._backoff(delay, outcome, flight))
                    outcome = self._attempt(payload, flight)
                if isinstance(outcome, Failure):
                    raise self._given_up(flights, flight, outcome) from outcome.exc
                flights.delivered(flight)
                out.append(outcome)
        return out

    def close(self) -> None:
        """Flush, then release the connection (also when the flush fails)."""
        if self._batcher.closed:
            return
        try:
            self.flush()
        finally:
            self._batcher.closed = True
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSender(_Parts[P, R]):
    """``Sender`` for async code: ``aclose()``, ``async with``, ``flush_periodically()``.

    Flushes from several tasks are safe: one at a time, so batches go out in order.
    """

    def __init__(
        self, batcher: Batcher, retry: RetryPolicy | None, log: logging.Logger, peer: str
    ) -> None:
        super().__init__(batcher, retry, log, peer)
        self._lock = anyio.Lock()

    async def _attempt(self, payload: P, flight: list[Event]) -> R | Failure:
        raise NotImplementedError

    async def _release(self) -> None:
        """Close what the sender owns (not a connection it was handed)."""

    async def flush(self) -> Any:
        raise NotImplementedError

    async def _send(self, flights: Flights) -> list[R]:
        """As ``Sender._send``; a cancellation puts back what was not delivered."""
        out: list[R] = []
        async with self._lock:
            with flights:
                for flight in flights:
                    payload = self._encode(flight)
                    outcome = await self._attempt(payload, flight)
                    for delay in self._retry.delays():
                        if not isinstance(outcome, Failure) or outcome.final:
                            break
                        await anyio.sleep(self._backoff(delay, outcome, flight))
                        outcome = await self._attempt(payload, flight)
                    if isinstance(outcome, Failure):
                        raise self._given_up(flights, flight, outcome) from outcome.exc
                    flights.delivered(flight)
                    out.append(outcome)
        return out

    async def flush_periodically(self) -> None:
        """Flush every ``flush_interval_s`` until cancelled (run it in a task group).

        A ``DeliveryError`` does not end it: raised here it would take the caller's task
        group down with it, for a peer that is only away for a while. The failure is
        logged and counted (``failed_batches``); the batch stays buffered for the next
        round, unless the peer refused it outright (sent again it would be refused
        again), which is dropped and counted (``dropped_events``).
        """
        interval = max(self._batcher.flush_interval_s, 0.01)
        while True:
            await anyio.sleep(interval)
            if not self._batcher.buffer:
                continue
            flights = self._batcher.flights(keep_failed=True)
            try:
                await self._send(flights)
            except DeliveryError as exc:
                fate = (
                    "kept for the next flush"
                    if flights.kept
                    else f"{len(exc.events)} events dropped"
                )
                self._log.warning("periodic flush: %s; %s", exc, fate)

    async def aclose(self) -> None:
        """Flush, then release the connection (also when the flush fails)."""
        if self._batcher.closed:
            return
        try:
            await self.flush()
        finally:
            self._batcher.closed = True
            await self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
