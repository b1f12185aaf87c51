"""Events through Redis Streams, the producer side: ``EventPublisher`` and
``AsyncEventPublisher`` write one stream entry per batch, which endpoints consume with
``redis_source.RedisSource``.

Both batch, give every event without an id one (so that a re-delivered entry folds
once), and retry on connection errors with the shared ``RetryPolicy``; after the retries
``DeliveryError`` keeps the events. An error reply (``ResponseError``: the key is not a
stream, the server is out of memory) is not retried: it would come again. The batching,
the retry loop and the lifecycle are the ones every sender shares (``batching``,
``senders``); this module holds only what is Redis's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from ..errors import DeliveryError
from ..model.events import Event, encode_events
from ..model.types import describe_exception
from .batching import Batcher
from .config import redact_url
from .redis_source import CONNECTION_ERRORS, FIELD_MSGPACK
from .retry import Failure, RetryPolicy
from .senders import AsyncSender, Sender

__all__ = ("AsyncEventPublisher", "EventPublisher", "PublisherStatistics")

_log = logging.getLogger("streammetrics.redis")


class PublisherStatistics(msgspec.Struct, frozen=True):
    buffered: int
    entries: int
    """Stream entries written (one per batch)."""
    events: int
    retries: int
    failed_batches: int
    """Flushes that ended in a ``DeliveryError`` (in ``flush_periodically`` too, which
    logs it and keeps the events for the next round)."""
    dropped_events: int = 0
    """Events ``flush_periodically`` let go: Redis refused them with an error reply,
    and there was no caller to hand the ``DeliveryError`` to."""


class _Stream:
    """What both publishers know of the stream they write to, and how a flush becomes
    its entries: every batch of a flush is one ``XADD``, all in one pipelined round trip."""

    def __init__(self, url: str, stream: str, maxlen: int | None) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be >= 1 or None, got {maxlen!r}")
        self.url = url
        self.stream = stream
        self.xadd_args: dict[str, Any] = (
            {"maxlen": maxlen, "approximate": True} if maxlen is not None else {}
        )

    @property
    def where(self) -> str:
        return f"stream {self.stream!r} at {redact_url(self.url)}"

    def batcher(
        self, batch_size: int, flush_interval_s: float, assign_ids: bool, clock: Callable[[], float]
    ) -> Batcher:
        return Batcher(
            f"the publisher to {self.where}",
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            assign_ids=assign_ids,
            clock=clock,
            flight_batches=None,
        )

    @staticmethod
    def entries(b: Batcher, flight: list[Event]) -> list[bytes]:
        """The entries' bodies: one per batch of ``batch_size`` events."""
        return [encode_events(batch, "msgpack") for batch in b.chunks(flight)]

    @staticmethod
    def failure(exc: Exception) -> Failure:
        """A lost connection may be back for the next try; an error reply would not change."""
        return Failure(describe_exception(exc), exc=exc, final=isinstance(exc, ResponseError))

    def error(self, events: list[Event], failure: Failure, retry: RetryPolicy) -> DeliveryError:
        if failure.final:
            message = f"{self.where} refused {len(events)} events: {failure.why}"
        else:
            message = (
                f"could not publish {len(events)} events to {self.where} after "
                f"{retry.max_retries} retries: {failure.why}"
            )
        return DeliveryError(message, url=redact_url(self.url), events=events)

    @staticmethod
    def statistics(b: Batcher) -> PublisherStatistics:
        return PublisherStatistics(
            buffered=len(b.buffer),
            entries=b.batches,
            events=b.events,
            retries=b.retries,
            failed_batches=b.failed,
            dropped_events=b.dropped,
        )


class EventPublisher(Sender[list[bytes], int]):
    """Publishes events to a Redis stream from synchronous code, one entry per batch.

    ``publish`` buffers; a full batch (or one older than ``flush_interval_s``) goes out
    with the next call, every batch of a flush in one pipelined round trip. ``maxlen``
    caps the stream (approximately, ``XADD MAXLEN ~``); None leaves it uncapped.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        stream: str = "streammetrics:events",
        *,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        maxlen: int | None = 100_000,
        assign_ids: bool = True,
        retry: RetryPolicy | None = None,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = _Stream(url, stream, maxlen)
        batcher = self._stream.batcher(batch_size, flush_interval_s, assign_ids, clock)
        super().__init__(batcher, retry, _log, self._stream.where)
        self._own = client is None
        self._r = client if client is not None else redis.Redis.from_url(url)

    def publish(self, event: Event) -> int:
        """Buffer one event; returns the entries written if that made a batch go out."""
        return self.publish_many((event,))

    def publish_many(self, events: Iterable[Event]) -> int:
        self._batcher.add(events)
        return self.flush() if self._batcher.due() else 0

    def flush(self) -> int:
        """Write everything buffered; returns the number of entries written. After the
        retries, ``DeliveryError`` keeps the events; a ``KeyboardInterrupt`` leaves them
        buffered."""
        return sum(self._send(self._batcher.flights()))

    def statistics(self) -> PublisherStatistics:
        return self._stream.statistics(self._batcher)

    def _encode(self, flight: list[Event]) -> list[bytes]:
        return self._stream.entries(self._batcher, flight)

    def _attempt(self, payload: list[bytes], flight: list[Event]) -> int | Failure:
        s = self._stream
        try:
            with self._r.pipeline(transaction=False) as pipe:
                for body in payload:
                    pipe.xadd(s.stream, {FIELD_MSGPACK: body}, **s.xadd_args)
                pipe.execute()
        except (*CONNECTION_ERRORS, ResponseError) as exc:
            return s.failure(exc)
        return len(payload)

    def _error(self, flight: list[Event], failure: Failure) -> DeliveryError:
        return self._stream.error(flight, failure, self._retry)

    def _release(self) -> None:
        if self._own:
            self._r.close()


class AsyncEventPublisher(AsyncSender[list[bytes], int]):
    """``EventPublisher`` for async code (redis-py's asyncio client). A cancelled flush
    keeps its events buffered: the next flush (or ``aclose``) writes them."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        stream: str = "streammetrics:events",
        *,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        maxlen: int | None = 100_000,
        assign_ids: bool = True,
        retry: RetryPolicy | None = None,
        client: redis.asyncio.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = _Stream(url, stream, maxlen)
        batcher = self._stream.batcher(batch_size, flush_interval_s, assign_ids, clock)
        super().__init__(batcher, retry, _log, self._stream.where)
        self._own = client is None
        self._r = client if client is not None else redis.asyncio.Redis.from_url(url)

    async def publish(self, event: Event) -> int:
        return await self.publish_many((event,))

    async def publish_many(self, events: Iterable[Event]) -> int:
        self._batcher.add(events)
        return await self.flush() if self._batcher.due() else 0

    async def flush(self) -> int:
        """As ``EventPublisher.flush``; a cancellation leaves the events buffered."""
        return sum(await self._send(self._batcher.flights()))

    def statistics(self) -> PublisherStatistics:
        return self._stream.statistics(self._batcher)

    def _encode(self, flight: list[Event]) -> list[bytes]:
        return self._stream.entries(self._batcher, flight)

    async def _attempt(self, payload: list[bytes], flight: list[Event]) -> int | Failure:
        s = self._stream
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for body in payload:
                    pipe.xadd(s.stream, {FIELD_MSGPACK: body}, **s.xadd_args)
                await pipe.execute()
        except (*CONNECTION_ERRORS, ResponseError) as exc:
            return s.failure(exc)
        return len(payload)

    def _error(self, flight: list[Event], failure: Failure) -> DeliveryError:
        return self._stream.error(flight, failure, self._retry)

    async def _release(self) -> None:
        if self._own:
            await self._r.aclose()
