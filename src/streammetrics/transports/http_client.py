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

The batching, the retry loop and the lifecycle are the ones every sender shares
(``batching``, ``senders``); this module holds only what is HTTP's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Generic, TypeVar

import httpx
import msgspec

from ..errors import DeliveryError
from ..intake.intake import IntakeResult
from ..model.events import Event, Format, encode_events
from ..model.nesting import json_too_deep
from ..model.types import describe_exception
from ..model.validation import UNREADABLE
from .batching import Batcher
from .retry import Failure, RetryPolicy, retry_after
from .senders import AsyncSender, Sender, _Parts

__all__ = ("AsyncEventClient", "ClientStatistics", "EventClient", "SendResult", "events_url")

_log = logging.getLogger("streammetrics.client")

#: Statuses worth another try: the server is busy, restarting or overloaded.
RETRY_STATUSES: Final = frozenset((408, 425, 429, 500, 502, 503, 504))
_CONTENT_TYPES: Final[dict[Format, str]] = {
    "msgpack": "application/msgpack",
    "json": "application/json",
}
_result = msgspec.json.Decoder(IntakeResult)

H = TypeVar("H", httpx.Client, httpx.AsyncClient)
"""The connection a client posts with: httpx's sync or async client."""


class SendResult(msgspec.Struct):
    """What the endpoint made of the events sent (summed over batches)."""

    batches: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejections: list[str] = msgspec.field(default_factory=list)
    """``"<path>: <reason>"`` of each rejected event, the path relative to its batch."""

    @classmethod
    def of(cls, results: Iterable[IntakeResult]) -> SendResult:
        out = cls()
        for r in results:
            out.batches += 1
            out.accepted += r.accepted
            out.rejected += r.rejected
            out.duplicates += r.duplicates
            out.rejections += [f"{x.path}: {x.reason}" for x in r.rejections]
        return out


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
    """Batches that ended in a ``DeliveryError`` (in ``flush_periodically`` too, which
    logs it and keeps the batch for the next round)."""
    dropped_events: int = 0
    """Events ``flush_periodically`` let go: the endpoint refused them (a 4xx), and
    there was no caller to hand the ``DeliveryError`` to."""


def events_url(url: str) -> str:
    """``http://host:port`` gets ``/events``; a URL with a path is used as it is."""
    parsed = httpx.URL(url)
    if parsed.path in ("", "/"):
        return str(parsed.copy_with(path="/events"))
    return url


class _Client(_Parts[bytes, IntakeResult], Generic[H]):
    """What both clients are besides their I/O: the route they post to (its URL, the body
    format, what its answers mean and the figures those answers carry), their batcher,
    and the connection they own or were handed. ``EventClient`` and ``AsyncEventClient``
    add only the calls that do I/O, one sync, one async."""

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
        http: H | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = events_url(url)
        self._fmt: Format = format
        self._headers = {**(headers or {}), "content-type": _CONTENT_TYPES[format]}
        self._accepted = self._rejected = self._duplicates = 0
        batcher = Batcher(
            f"the event client for {self._url}",
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            assign_ids=assign_ids,
            clock=clock,
            flight_batches=1,
        )
        super().__init__(batcher, retry, _log, self._url)
        self._own_http = http is None
        self._http: H = http or self._new_http(timeout_s)

    def _new_http(self, timeout_s: float) -> H:
        """The connection the client opens (and closes) when it was handed none."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self._url

    def statistics(self) -> ClientStatistics:
        b = self._batcher
        return ClientStatistics(
            buffered=len(b.buffer),
            batches_sent=b.batches,
            events_sent=b.events,
            accepted=self._accepted,
            rejected=self._rejected,
            duplicates=self._duplicates,
            retries=b.retries,
            failed_batches=b.failed,
            dropped_events=b.dropped,
        )

    def _encode(self, flight: list[Event]) -> bytes:
        return encode_events(flight, self._fmt)

    def _judge(self, response: httpx.Response) -> IntakeResult | Failure:
        """The endpoint's answer to a 200; else a failure, final for a status that
        retrying cannot fix."""
        status = response.status_code
        if status == 200:
            r = _result.decode(response.content)
            self._accepted += r.accepted
            self._rejected += r.rejected
            self._duplicates += r.duplicates
            return r
        if status in RETRY_STATUSES or status >= 500:
            hint = retry_after(response.headers.get("retry-after"))
            return Failure(f"HTTP {status}", status=status, retry_after=hint)
        return Failure(f"{status} {_detail(response)}", status=status, final=True)

    @staticmethod
    def _unreachable(exc: httpx.TransportError) -> Failure:
        """Refused, reset, timed out: the batch may not have arrived, so it is retried."""
        return Failure(describe_exception(exc), exc=exc)

    def _error(self, flight: list[Event], failure: Failure) -> DeliveryError:
        if failure.final:
            message = f"{self._url} refused a batch of {len(flight)} events: {failure.why}"
        else:
            message = (
                f"could not deliver a batch of {len(flight)} events to {self._url} after "
                f"{self._retry.max_retries} retries: {failure.why}"
            )
        return DeliveryError(message, url=self._url, events=flight, status=failure.status)


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


class EventClient(_Client[httpx.Client], Sender[bytes, IntakeResult]):
    """Reports events to a MetricsEndpoint from synchronous code.

    ``url`` is the endpoint (``http://127.0.0.1:9000``; ``/events`` is added) or the full
    ingest URL; ``http``, an ``httpx.Client`` to post with (it stays open on close).
    Use as a context manager, or call ``close()``: both flush.
    """

    def _new_http(self, timeout_s: float) -> httpx.Client:
        return httpx.Client(timeout=timeout_s)

    def send(self, event: Event) -> SendResult | None:
        """Buffer one event; flushes (and returns what it sent) when a batch is due."""
        return self.send_many((event,))

    def send_many(self, events: Iterable[Event]) -> SendResult | None:
        """Buffer events; flushes (and returns what it sent) when a batch is due."""
        self._batcher.add(events)
        return self.flush() if self._batcher.due() else None

    def flush(self) -> SendResult:
        """Send everything buffered now, batch by batch. A batch that cannot be delivered
        raises ``DeliveryError`` (with its events); the batches after it stay buffered,
        and so does every batch not delivered when a ``KeyboardInterrupt`` strikes."""
        return SendResult.of(self._send(self._batcher.flights()))

    def _attempt(self, payload: bytes, flight: list[Event]) -> IntakeResult | Failure:
        try:
            response = self._http.post(self._url, content=payload, headers=self._headers)
        except httpx.TransportError as exc:
            return self._unreachable(exc)
        return self._judge(response)

    def _release(self) -> None:
        if self._own_http:
            self._http.close()


class AsyncEventClient(_Client[httpx.AsyncClient], AsyncSender[bytes, IntakeResult]):
    """``EventClient`` for async code (httpx's async client; any anyio backend): ``http``
    is an ``httpx.AsyncClient``.

    ``send``/``flush`` from several tasks are safe: batches go out one at a time, in
    order. A cancelled flush keeps what it had not delivered.
    """

    def _new_http(self, timeout_s: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=timeout_s)

    async def send(self, event: Event) -> SendResult | None:
        return await self.send_many((event,))

    async def send_many(self, events: Iterable[Event]) -> SendResult | None:
        self._batcher.add(events)
        return await self.flush() if self._batcher.due() else None

    async def flush(self) -> SendResult:
        """As ``EventClient.flush``; a cancellation keeps what was not delivered."""
        return SendResult.of(await self._send(self._batcher.flights()))

    async def _attempt(self, payload: bytes, flight: list[Event]) -> IntakeResult | Failure:
        try:
            response = await self._http.post(self._url, content=payload, headers=self._headers)
        except httpx.TransportError as exc:
            return self._unreachable(exc)
        return self._judge(response)

    async def _release(self) -> None:
        if self._own_http:
            await self._http.aclose()
