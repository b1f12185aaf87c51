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
from typing import Any, Generic, TypeVar

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
from .senders import AsyncSender, Sender, _Parts

__all__ = ("AsyncEventPublisher", "EventPublisher", "PublisherStatistics")

_log = logging.getLogger("streammetrics.redis")

C = TypeVar("C", redis.Redis, redis.asyncio.Redis)
"""The client a publisher writes with: redis-py's sync or asyncio one."""


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


class _Publisher(_Parts[list[bytes], int], Generic[C]):
    """What both publishers are besides their I/O: the stream they write to, how a flush
    becomes its entries (every batch of a flush is one ``XADD``, all in one pipelined
    round trip), their batcher, and the client they own or were handed.
    ``EventPublisher`` and ``AsyncEventPublisher`` add only the calls that do I/O, one
    sync, one async."""

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
        client: C | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be >= 1 or None, got {maxlen!r}")
        self._url = url
        self._stream = stream
        self._xadd_args: dict[str, Any] = (
            {"maxlen": maxlen, "approximate": True} if maxlen is not None else {}
        )
        batcher = Batcher(
            f"the publisher to {self._where}",
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            assign_ids=assign_ids,
            clock=clock,
            flight_batches=None,
        )
        super().__init__(batcher, retry, _log, self._where)
        self._own = client is None
        self._r: C = client if client is not None else self._connect(url)

    def _connect(self, url: str) -> C:
        """The client the publisher opens (and closes) when it was handed none."""
        raise NotImplementedError

    @property
    def _where(self) -> str:
        return f"stream {self._stream!r} at {redact_url(self._url)}"

    def statistics(self) -> PublisherStatistics:
        b = self._batcher
        return PublisherStatistics(
            buffered=len(b.buffer),
            entries=b.batches,
            events=b.events,
            retries=b.retries,
            failed_batches=b.failed,
            dropped_events=b.dropped,
        )

    def _encode(self, flight: list[Event]) -> list[bytes]:
        """The entries' bodies: one per batch of ``batch_size`` events."""
        return [encode_events(batch, "msgpack") for batch in self._batcher.chunks(flight)]

    @staticmethod
    def _failure(exc: Exception) -> Failure:
        """A lost connection may be back for the next try; an error reply would not change."""
        return Failure(describe_exception(exc), exc=exc, final=isinstance(exc, ResponseError))

    def _error(self, flight: list[Event], failure: Failure) -> DeliveryError:
        if failure.final:
            message = f"{self._where} refused {len(flight)} events: {failure.why}"
        else:
            message = (
                f"could not publish {len(flight)} events to {self._where} after "
                f"{self._retry.max_retries} retries: {failure.why}"
            )
        return DeliveryError(message, url=redact_url(self._url), events=flight)


class EventPublisher(_Publisher[redis.Redis], Sender[list[bytes], int]):
    """Publishes events to a Redis stream from synchronous code, one entry per batch.

    ``publish`` buffers; a full batch (or one older than ``flush_interval_s``) goes out
    with the next call, every batch of a flush in one pipelined round trip. ``maxlen``
    caps the stream (approximately, ``XADD MAXLEN ~``); None leaves it uncapped.
    ``client``, a ``redis.Redis`` to write with (it stays open on close).
    """

    def _connect(self, url: str) -> redis.Redis:
        return redis.Redis.from_url(url)

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

    def _attempt(self, payload: list[bytes], flight: list[Event]) -> int | Failure:
        try:
            with self._r.pipeline(transaction=False) as pipe:
                for body in payload:
                    pipe.xadd(self._stream, {FIELD_MSGPACK: body}, **self._xadd_args)
                pipe.execute()
        except (*CONNECTION_ERRORS, ResponseError) as exc:
            return self._failure(exc)
        return len(payload)

    def _release(self) -> None:
        if self._own:
            self._r.close()


class AsyncEventPublisher(_Publisher[redis.asyncio.Redis], AsyncSender[list[bytes], int]):
    """``EventPublisher`` for async code (redis-py's asyncio client: ``client`` is a
    ``redis.asyncio.Redis``). A cancelled flush keeps its events buffered: the next flush
    (or ``aclose``) writes them."""

    def _connect(self, url: str) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(url)

    async def publish(self, event: Event) -> int:
        return await self.publish_many((event,))

    async def publish_many(self, events: Iterable[Event]) -> int:
        self._batcher.add(events)
        return await self.flush() if self._batcher.due() else 0

    async def flush(self) -> int:
        """As ``EventPublisher.flush``; a cancellation leaves the events buffered."""
        return sum(await self._send(self._batcher.flights()))

    async def _attempt(self, payload: list[bytes], flight: list[Event]) -> int | Failure:
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for body in payload:
                    pipe.xadd(self._stream, {FIELD_MSGPACK: body}, **self._xadd_args)
                await pipe.execute()
        except (*CONNECTION_ERRORS, ResponseError) as exc:
            return self._failure(exc)
        return len(payload)

    async def _release(self) -> None:
        if self._own:
            await self._r.aclose()
