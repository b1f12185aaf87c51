"""Clients that report events to a MetricsEndpoint's ``POST /events`` from another process.

Both clients batch (``batch_size`` events, or whatever is buffered once
``flush_interval_s`` has passed since the first), send MessagePack, and retry a batch
with exponential backoff and jitter on connection errors, timeouts, 5xx and 429
(honouring ``Retry-After``). A retry cannot double-count: every event without an id gets
one (``<client prefix>-<sequence>``), and the endpoint folds a repeated id once.

A 4xx other than 429 is not retried (the batch would fail again): it raises
``DeliveryError``, as does a batch still failing after ``max_retries``; the error keeps
the batch's events. ``close()`` flushes what is buffered.

There is no background thread: the sync client flushes from ``send`` when a batch is
full or old enough, and on ``flush()``/``close()``. The async client can also flush on
a timer: ``tg.start_soon(client.flush_periodically)``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import anyio
import httpx
import msgspec

from ..errors import DeliveryError
from ..intake.intake import IntakeResult
from ..model.events import Event, Format, encode_events
from ..model.nesting import json_too_deep
from ..model.validation import UNREADABLE
from .retry import RetryPolicy, retry_after
from .senders import AsyncSender, Sender

__all__ = ("AsyncEventClient", "ClientStatistics", "EventClient", "SendResult", "events_url")

_log = logging.getLogger("streammetrics.client")

#: Statuses worth another try: the server is busy, restarting or overloaded.
RETRY_STATUSES: Final = frozenset((408, 425, 429, 500, 502, 503, 504))
_CONTENT_TYPES: Final[dict[Format, str]] = {
    "msgpack": "application/msgpack",
    "json": "application/json",
}
_result = msgspec.json.Decoder(IntakeResult)


class SendResult(msgspec.Struct):
    """What the endpoint made of the events sent (summed over batches)."""

    batches: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejections: list[str] = msgspec.field(default_factory=list)
    """``"<path>: <reason>"`` of each rejected event, the path relative to its batch."""

    def add(self, r: IntakeResult) -> None:
        self.batches += 1
        self.accepted += r.accepted
        self.rejected += r.rejected
        self.duplicates += r.duplicates
        self.rejections += [f"{x.path}: {x.reason}" for x in r.rejections]

    def merge(self, other: SendResult) -> None:
        self.batches += other.batches
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.duplicates += other.duplicates
        self.rejections += other.rejections


class ClientStatistics(msgspec.Struct, frozen=True):
    buffered: int
    """Events waiting for the next flush."""
    batches_sent: int
    events_sent: int
    accepted: int
    rejected: int
    duplicates: int
    retries: int
    """Attempts beyond the first, over all batches."""
    failed_batches: int
    """Batches given up on (``DeliveryError``)."""


def events_url(url: str) -> str:
    """``http://host:port`` gets ``/events``; a URL with a path is used as it is."""
    parsed = httpx.URL(url)
    if parsed.path in ("", "/"):
        return str(parsed.copy_with(path="/events"))
    return url


class _Batcher:
    """The buffer, the id assignment and the bookkeeping both clients share."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int,
        flush_interval_s: float,
        retry: RetryPolicy | None,
        fmt: Format,
        assign_ids: bool,
        clock: Callable[[], float],
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be >= 0, got {flush_interval_s!r}")
        self.url = events_url(url)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry = retry or RetryPolicy()
        self.fmt: Format = fmt
        self.content_type = _CONTENT_TYPES[fmt]
        self.assign_ids = assign_ids
        self.clock = clock
        self.prefix = secrets.token_hex(6)
        self.seq = 0
        self.buffer: list[Event] = []
        self.first_at: float | None = None
        self.closed = False
        self.batches = self.events_sent = self.accepted = self.rejected = 0
        self.duplicates = self.retries = self.failed = 0

    def add(self, events: Iterable[Event]) -> None:
        if self.closed:
            raise RuntimeError(f"the event client for {self.url} is closed")
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
        if len(self.buffer) >= self.batch_size:
            return True
        return bool(self.buffer) and (
            self.first_at is not None and self.clock() - self.first_at >= self.flush_interval_s
        )

    def take(self) -> list[list[Event]]:
        buf, self.buffer, self.first_at = self.buffer, [], None
        n = self.batch_size
        return [buf[i : i + n] for i in range(0, len(buf), n)]

    def restore(self, batches: list[list[Event]]) -> None:
        """Put batches that were not sent back at the front of the buffer, in order."""
        if not batches:
            return
        self.buffer[:0] = [ev for batch in batches for ev in batch]
        self.first_at = self.clock()

    def judge(self, response: httpx.Response, batch: list[Event]) -> IntakeResult | float | None:
        """The result of a 200; the ``Retry-After`` seconds (or None) of a retryable
        status; raises ``DeliveryError`` for a status that retrying cannot fix."""
        status = response.status_code
        if status == 200:
            r = _result.decode(response.content)
            self.batches += 1
            self.events_sent += len(batch)
            self.accepted += r.accepted
            self.rejected += r.rejected
            self.duplicates += r.duplicates
            return r
        if status in RETRY_STATUSES or status >= 500:
            return retry_after(response.headers.get("retry-after"))
        self.failed += 1
        raise DeliveryError(
            f"{self.url} refused a batch of {len(batch)} events: {status} {_detail(response)}",
            url=self.url,
            events=batch,
            status=status,
        )

    def give_up(self, batch: list[Event], why: str, status: int | None) -> DeliveryError:
        self.failed += 1
        return DeliveryError(
            f"could not deliver a batch of {len(batch)} events to {self.url} after "
            f"{self.retry.max_retries} retries: {why}",
            url=self.url,
            events=batch,
            status=status,
        )

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            buffered=len(self.buffer),
            batches_sent=self.batches,
            events_sent=self.events_sent,
            accepted=self.accepted,
            rejected=self.rejected,
            duplicates=self.duplicates,
            retries=self.retries,
            failed_batches=self.failed,
        )


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of an error body, else the start of its text (the peer may be any
    server: a body that is not JSON, or nests too deeply to decode, is just text)."""
    if json_too_deep(response.content):
        return response.text[:200]
    try:
        body = msgspec.json.decode(response.content)
    except UNREADABLE:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return response.text[:200]


def _why(exc: BaseException | None, status: int | None) -> str:
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    return f"HTTP {status}"


class EventClient(Sender[_Batcher, ClientStatistics]):
    """Reports events to a MetricsEndpoint from synchronous code.

    ``url`` is the endpoint (``http://127.0.0.1:9000``; ``/events`` is added) or the full
    ingest URL. Use as a context manager, or call ``close()``: both flush.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        format: Format = "msgpack",
        assign_ids: bool = True,
        headers: Mapping[str, str] | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._b = _Batcher(
            url,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            retry=retry,
            fmt=format,
            assign_ids=assign_ids,
            clock=clock,
        )
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=timeout_s)
        self._headers = {**(headers or {}), "content-type": self._b.content_type}

    @property
    def url(self) -> str:
        return self._b.url

    def send(self, event: Event) -> SendResult | None:
        """Buffer one event; flushes (and returns what it sent) when a batch is due."""
        return self.send_many((event,))

    def send_many(self, events: Iterable[Event]) -> SendResult | None:
        """Buffer events; flushes (and returns what it sent) when a batch is due."""
        self._b.add(events)
        return self.flush() if self._b.due() else None

    def flush(self) -> SendResult:
        """Send everything buffered now, batch by batch. A batch that cannot be delivered
        raises ``DeliveryError`` (with its events); the batches after it stay buffered."""
        out = SendResult()
        batches = self._b.take()
        for k, batch in enumerate(batches):
            try:
                out.add(self._post(batch))
            except DeliveryError:  # its events are in the error; the rest wait for later
                self._b.restore(batches[k + 1 :])
                raise
            except BaseException:  # interrupted mid-batch: it may not have arrived
                self._b.restore(batches[k:])
                raise
        return out

    def _post(self, batch: list[Event]) -> IntakeResult:
        b = self._b
        body = encode_events(batch, b.fmt)
        attempt = 0
        while True:
            exc: BaseException | None = None
            status: int | None = None
            hint: float | None = None
            try:
                response = self._http.post(b.url, content=body, headers=self._headers)
            except httpx.TransportError as e:  # refused, reset, timed out
                exc = e
            else:
                judged = b.judge(response, batch)
                if isinstance(judged, IntakeResult):
                    return judged
                status, hint = response.status_code, judged
            if attempt >= b.retry.max_retries:
                raise b.give_up(batch, _why(exc, status), status)
            delay = b.retry.delay(attempt, hint)
            _log.debug("retrying a batch to %s in %.3fs: %s", b.url, delay, _why(exc, status))
            attempt += 1
            b.retries += 1
            time.sleep(delay)

    def _release(self) -> None:
        if self._own_http:
            self._http.close()


class AsyncEventClient(AsyncSender[_Batcher, ClientStatistics]):
    """``EventClient`` for async code (httpx's async client; any anyio backend).

    ``send``/``flush`` from several tasks are safe: batches go out one at a time, in
    order.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        format: Format = "msgpack",
        assign_ids: bool = True,
        headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._b = _Batcher(
            url,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            retry=retry,
            fmt=format,
            assign_ids=assign_ids,
            clock=clock,
        )
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._headers = {**(headers or {}), "content-type": self._b.content_type}
        self._lock = anyio.Lock()

    @property
    def url(self) -> str:
        return self._b.url

    async def send(self, event: Event) -> SendResult | None:
        return await self.send_many((event,))

    async def send_many(self, events: Iterable[Event]) -> SendResult | None:
        self._b.add(events)
        return await self.flush() if self._b.due() else None

    async def flush(self) -> SendResult:
        """As ``EventClient.flush``."""
        out = SendResult()
        async with self._lock:
            batches = self._b.take()
            for k, batch in enumerate(batches):
                try:
                    out.add(await self._post(batch))
                except DeliveryError:
                    self._b.restore(batches[k + 1 :])
                    raise
                except BaseException:  # cancelled mid-batch: resent later, deduped by id
                    self._b.restore(batches[k:])
                    raise
        return out

    async def flush_periodically(self) -> None:
        """Flush every ``flush_interval_s`` until cancelled (run it in a task group)."""
        interval = max(self._b.flush_interval_s, 0.01)
        while True:
            await anyio.sleep(interval)
            if self._b.buffer:
                await self.flush()

    async def _post(self, batch: list[Event]) -> IntakeResult:
        b = self._b
        body = encode_events(batch, b.fmt)
        attempt = 0
        while True:
            exc: BaseException | None = None
            status: int | None = None
            hint: float | None = None
            try:
                response = await self._http.post(b.url, content=body, headers=self._headers)
            except httpx.TransportError as e:
                exc = e
            else:
                judged = b.judge(response, batch)
                if isinstance(judged, IntakeResult):
                    return judged
                status, hint = response.status_code, judged
            if attempt >= b.retry.max_retries:
                raise b.give_up(batch, _why(exc, status), status)
            delay = b.retry.delay(attempt, hint)
            _log.debug("retrying a batch to %s in %.3fs: %s", b.url, delay, _why(exc, status))
            attempt += 1
            b.retries += 1
            await anyio.sleep(delay)

    async def _release(self) -> None:
        if self._own_http:
            await self._http.aclose()
