"""Events through Redis Streams, the producer side: ``EventPublisher`` and
``AsyncEventPublisher`` write one stream entry per batch, which endpoints consume with
``redis_source.RedisSource``.

Both batch, give every event without an id one (so that a re-delivered entry folds
once), and retry a batch on connection errors with the shared ``RetryPolicy``; after
the retries ``DeliveryError`` keeps the events.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgspec
import redis
import redis.asyncio
from redis.exceptions import ResponseError

from ..errors import DeliveryError
from ..model.events import Event, encode_events
from .config import redact_url
from .redis_source import CONNECTION_ERRORS, FIELD_MSGPACK
from .retry import RetryPolicy
from .senders import AsyncSender, Sender

__all__ = ("AsyncEventPublisher", "EventPublisher", "PublisherStatistics")


class PublisherStatistics(msgspec.Struct, frozen=True):
    buffered: int
    entries: int
    """Stream entries written (one per batch)."""
    events: int
    retries: int
    failed_batches: int


class _Batches:
    """Buffer, ids and encoding shared by both publishers."""

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        batch_size: int,
        flush_interval_s: float,
        maxlen: int | None,
        assign_ids: bool,
        retry: RetryPolicy | None,
        clock: Callable[[], float],
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be >= 1 or None, got {maxlen!r}")
        self.url = url
        self.stream = stream
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.maxlen = maxlen
        self.assign_ids = assign_ids
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.prefix = secrets.token_hex(6)
        self.seq = 0
        self.buffer: list[Event] = []
        self.first_at: float | None = None
        self.closed = False
        self.entries = self.events = self.retries = self.failed = 0

    @property
    def where(self) -> str:
        return f"stream {self.stream!r} at {redact_url(self.url)}"

    def add(self, events: Iterable[Event]) -> None:
        if self.closed:
            raise RuntimeError(f"the publisher to {self.where} is closed")
        if not self.buffer:
            self.first_at = self.clock()
        if self.assign_ids:
            replace = msgspec.structs.replace
            for ev in events:
                if ev.id is None:
                    self.seq += 1
                    ev = replace(ev, id=f"{self.prefix}-{self.seq:x}")
                self.buffer.append(ev)
        else:
            self.buffer.extend(events)

    def due(self) -> bool:
        if len(self.buffer) >= self.batch_size:
            return True
        return bool(self.buffer) and (
            self.first_at is not None and self.clock() - self.first_at >= self.flush_interval_s
        )

    def take(self) -> tuple[list[Event], list[bytes]]:
        buf, self.buffer, self.first_at = self.buffer, [], None
        n = self.batch_size
        return buf, [encode_events(buf[i : i + n], "msgpack") for i in range(0, len(buf), n)]

    def xadd_args(self) -> dict[str, Any]:
        return {"maxlen": self.maxlen, "approximate": True} if self.maxlen is not None else {}

    def done(self, events: int, entries: int) -> None:
        self.entries += entries
        self.events += events

    def give_up(self, events: list[Event], exc: BaseException) -> DeliveryError:
        self.failed += 1
        return DeliveryError(
            f"could not publish {len(events)} events to {self.where} after "
            f"{self.retry.max_retries} retries: {type(exc).__name__}: {exc}",
            url=redact_url(self.url),
            events=events,
        )

    def statistics(self) -> PublisherStatistics:
        return PublisherStatistics(
            buffered=len(self.buffer),
            entries=self.entries,
            events=self.events,
            retries=self.retries,
            failed_batches=self.failed,
        )


class EventPublisher(Sender[_Batches, PublisherStatistics]):
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
        self._b = _Batches(
            url,
            stream,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            maxlen=maxlen,
            assign_ids=assign_ids,
            retry=retry,
            clock=clock,
        )
        self._own = client is None
        self._r = client if client is not None else redis.Redis.from_url(url)

    def publish(self, event: Event) -> int:
        """Buffer one event; returns the entries written if that made a batch go out."""
        return self.publish_many((event,))

    def publish_many(self, events: Iterable[Event]) -> int:
        self._b.add(events)
        return self.flush() if self._b.due() else 0

    def flush(self) -> int:
        """Write everything buffered; returns the number of entries written. After the
        retries, ``DeliveryError`` keeps the events."""
        b = self._b
        if not b.buffer:
            return 0
        events, bodies = b.take()
        attempt = 0
        while True:
            try:
                with self._r.pipeline(transaction=False) as pipe:
                    for body in bodies:
                        pipe.xadd(b.stream, {FIELD_MSGPACK: body}, **b.xadd_args())
                    pipe.execute()
            except (*CONNECTION_ERRORS, ResponseError) as exc:
                if attempt >= b.retry.max_retries or isinstance(exc, ResponseError):
                    raise b.give_up(events, exc) from exc
                time.sleep(b.retry.delay(attempt))
                attempt += 1
                b.retries += 1
                continue
            b.done(len(events), len(bodies))
            return len(bodies)

    def _release(self) -> None:
        if self._own:
            self._r.close()


class AsyncEventPublisher(AsyncSender[_Batches, PublisherStatistics]):
    """``EventPublisher`` for async code (redis-py's asyncio client)."""

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
        self._b = _Batches(
            url,
            stream,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            maxlen=maxlen,
            assign_ids=assign_ids,
            retry=retry,
            clock=clock,
        )
        self._own = client is None
        self._r = client if client is not None else redis.asyncio.Redis.from_url(url)
        self._lock = anyio.Lock()

    async def publish(self, event: Event) -> int:
        return await self.publish_many((event,))

    async def publish_many(self, events: Iterable[Event]) -> int:
        self._b.add(events)
        return await self.flush() if self._b.due() else 0

    async def flush(self) -> int:
        b = self._b
        async with self._lock:
            if not b.buffer:
                return 0
            events, bodies = b.take()
            attempt = 0
            while True:
                try:
                    async with self._r.pipeline(transaction=False) as pipe:
                        for body in bodies:
                            pipe.xadd(b.stream, {FIELD_MSGPACK: body}, **b.xadd_args())
                        await pipe.execute()
                except (*CONNECTION_ERRORS, ResponseError) as exc:
                    if attempt >= b.retry.max_retries or isinstance(exc, ResponseError):
                        raise b.give_up(events, exc) from exc
                    await anyio.sleep(b.retry.delay(attempt))
                    attempt += 1
                    b.retries += 1
                    continue
                b.done(len(events), len(bodies))
                return len(bodies)

    async def flush_periodically(self) -> None:
        """Flush every ``flush_interval_s`` until cancelled (run it in a task group)."""
        while True:
            await anyio.sleep(max(self._b.flush_interval_s, 0.01))
            await self.flush()

    async def _release(self) -> None:
        if self._own:
            await self._r.aclose()
