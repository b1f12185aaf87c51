"""Events through Redis Streams, the consumer side: a consumer group of endpoints.

Wire format (what the publishers in ``redis_publisher`` write): each stream entry holds
one batch of events in one field, ``msgpack`` (what ``encode_events(..., "msgpack")``
makes: an event, a list, or ``{"events": [...]}``) or ``json`` (the same in JSON, for
producers in other languages).

The consumer (``RedisSource``) is at-least-once:

1. ``XGROUP CREATE ... MKSTREAM`` when the group is missing (``BUSYGROUP`` is fine);
2. first ``XREADGROUP ... 0``: the entries this consumer read in a former life and
   never acknowledged (it crashed), then ``>`` for new ones;
3. ``XACK`` only after an entry's events are folded;
4. every ``claim_interval_s``, ``XAUTOCLAIM`` takes over entries that another consumer
   left unacknowledged for ``claim_idle_s`` (it is presumed dead);
5. an entry that cannot be decoded (no ``msgpack``/``json`` field, a body that does not
   decode) is copied with its reason to the dead-letter stream ``<stream>:dead``
   (``MAXLEN ~ dead_letter_maxlen``) and acknowledged in the same ``MULTI``: never left
   pending, never lost without a trace;
6. after each claim pass, other consumers idle past ``consumer_idle_s`` that hold no
   pending entry are removed (``XGROUP DELCONSUMER``), so a group does not keep every
   consumer name a restart ever used;
7. ``XINFO GROUPS`` gives the group's lag and pending count, exported as
   ``streammetrics_redis_consumer_lag`` / ``streammetrics_redis_pending_entries`` (by
   ``redis_metrics.RedisCollector``) and fed to the built-in ``ConsumerLag`` alert
   through the aggregator's stream figures.

A re-delivered entry whose events the endpoint did fold (the ack was lost with the
connection) is harmless when its events carry ids: the endpoint's dedup window folds
each id once. The publishers give every event without an id one.

While it cannot read (Redis away, a read past its deadline) the source says so
(``source_health``): the health judgement makes that a reason for ``degraded`` and the
``EventSourceDown`` alert, both gone once a read works again.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec
import redis.asyncio
from anyio.abc import TaskStatus
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import EventError, TransportError
from ..judge.health import SourceHealth
from ..model.events import Delta, Format
from ..model.types import Port, describe_exception
from .config import RedisSourceConfig, redact_url
from .retry import RetryPolicy

if TYPE_CHECKING:
    from ..intake.intake import Intake

__all__ = (
    "CONNECTION_ERRORS",
    "DEAD_LETTER_SUFFIX",
    "FIELD_JSON",
    "FIELD_MSGPACK",
    "RedisSource",
    "RedisSourceStatistics",
)

_log = logging.getLogger("streammetrics.redis")

FIELD_MSGPACK: Final = b"msgpack"
FIELD_JSON: Final = b"json"
_FIELDS: Final[tuple[tuple[bytes, Format], ...]] = (
    (FIELD_MSGPACK, "msgpack"),
    (FIELD_JSON, "json"),
)
#: The dead-letter stream of stream ``s`` is ``s + DEAD_LETTER_SUFFIX``.
DEAD_LETTER_SUFFIX: Final = ":dead"
#: Errors after which the connection is rebuilt and the read starts over from "0".
CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)


#: KEYS[1] stream; ARGV group, own consumer name, idle ms. Removes the group's other
#: consumers idle that long with nothing pending, and returns their names.
_DELETE_IDLE: Final = """
local out = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['idle']) >= tonumber(ARGV[3])
      and tonumber(f['pending']) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    out[#out + 1] = f['name']
  end
end
return out
"""


def _body(fields: dict[bytes, bytes]) -> tuple[bytes, Format] | None:
    """The entry's events and their format: the ``msgpack`` field, else ``json``."""
    for field, fmt in _FIELDS:
        data = fields.get(field)
        if data is not None:
            return data, fmt
    return None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _gone(exc: ResponseError) -> bool:
    """Whether Redis says the stream or its group no longer exists: ``NOGROUP`` on a read,
    ``UNBLOCKED`` to a read that was blocked on the key when it was deleted."""
    text = str(exc)
    return "NOGROUP" in text or text.startswith("UNBLOCKED")


def _entries(resp: Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """The entries of an XREADGROUP reply, in either of redis-py's shapes."""
    if not resp:
        return []
    if isinstance(resp, dict):
        out: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        for value in resp.values():
            out += value[0] if value and isinstance(value[0], list) else value
        return out
    return [e for _stream, entries in resp for e in entries]


class RedisSourceStatistics(msgspec.Struct, frozen=True):
    stream: str
    group: str
    consumer: str
    connected: bool
    entries: int
    """Entries read and acknowledged (including re-delivered and claimed ones)."""
    events: int
    """Events folded from them."""
    recovered: int
    """Entries of this consumer's own pending list read again after a (re)start."""
    claimed: int
    """Entries taken over from other consumers (``XAUTOCLAIM``)."""
    trimmed: int
    """Entries that were trimmed from the stream before they could be read."""
    reconnects: int
    server_errors: int
    """Reads Redis answered with an error other than a missing group (a key of another
    type, a permission taken away, out of memory): each one retried after a backoff,
    the source reported down meanwhile."""
    dead_letters: int
    """Entries that could not be decoded, copied to ``<stream>:dead`` and acknowledged."""
    removed_consumers: int
    """Idle consumers this one removed from the group (``XGROUP DELCONSUMER``)."""
    lag: int | None
    """The group's lag in entries (``XINFO GROUPS``), None until known."""
    pending: int | None
    """Entries read by the group and not yet acknowledged."""


class RedisSource:
    """Consumes a Redis stream with a consumer group into an ``Intake``.

    ``run`` raises ``TransportError`` when Redis cannot be reached at start (a wrong URL
    should stop ``streammetrics run``); later connection losses are retried forever.
    """

    def __init__(self, config: RedisSourceConfig, intake: Intake, *, name: str) -> None:
        """``intake`` folds the entries and counts what cannot be folded (shared with
        HTTP ingest); its aggregator also gets the stream's own figures (entries
        consumed, lag), under the stream key ``redis:<stream>``."""
        self.config = config
        self.intake = intake
        self.name = name
        self.consumer = config.consumer_name(
            host=socket.gethostname(), name=name, port=None, pid=os.getpid()
        )
        self.key = f"redis:{config.stream}"
        self._connected = False
        self._entries = self._events = self._recovered = self._claimed = 0
        self._trimmed = self._reconnects = self._server_errors = 0
        self._dead = self._removed = 0
        self._reason = "not started"
        self._lag: int | None = None
        self._pending: int | None = None

    @property
    def where(self) -> str:
        c = self.config
        return f"stream {c.stream!r} group {c.group!r} at {redact_url(c.url)}"

    def statistics(self) -> RedisSourceStatistics:
        c = self.config
        return RedisSourceStatistics(
            stream=c.stream,
            group=c.group,
            consumer=self.consumer,
            connected=self._connected,
            entries=self._entries,
            events=self._events,
            recovered=self._recovered,
            claimed=self._claimed,
            trimmed=self._trimmed,
            reconnects=self._reconnects,
            server_errors=self._server_errors,
            dead_letters=self._dead,
            removed_consumers=self._removed,
            lag=self._lag,
            pending=self._pending,
        )

    def lag(self) -> int | None:
        return self._lag

    @property
    def dead_stream(self) -> str:
        return self.config.stream + DEAD_LETTER_SUFFIX

    def source_health(self) -> SourceHealth:
        """Whether the last read worked, and why not (the ``EventSource`` protocol)."""
        if self._connected:
            return SourceHealth(self.key, True)
        return SourceHealth(self.key, False, f"{self.where}: {self._reason}")

    def _lost(self, exc: BaseException) -> None:
        self._connected = False
        self._reason = f"connection lost: {describe_exception(exc)}"

    def _refused(self, exc: ResponseError) -> None:
        self._connected = False
        self._reason = f"Redis answered an error: {describe_exception(exc)}"
        self._server_errors += 1

    async def run(
        self, *, port: Port | None = None, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Consume until cancelled; ``port`` fills the consumer name's ``{port}``."""
        cfg = self.config
        self.consumer = cfg.consumer_name(
            host=socket.gethostname(), name=self.name, port=port, pid=os.getpid()
        )
        client = redis.asyncio.Redis.from_url(
            cfg.url,
            socket_connect_timeout=cfg.connect_timeout_s,
            # A blocking read waits block_ms on the server: the socket waits that and
            # the reply's own deadline, so a hung server is a lost connection, not a hang.
            socket_timeout=cfg.block_ms / 1000 + cfg.read_timeout_s,
            health_check_interval=30,
        )
        try:
            try:
                with anyio.fail_after(cfg.connect_timeout_s):
                    await self._ensure_group(client)
            except (RedisError, OSError, TimeoutError) as exc:
                raise TransportError(
                    f"component {self.name!r}: cannot consume {self.where}: "
                    f"{describe_exception(exc)}"
                ) from exc
            self._connected = True
            self._reason = ""
            self.intake.aggregator.register_stream(
                self.key, to_component=self.name, stream_name=cfg.stream, lag=self.lag
            )
            await self._read_lag(client)
            _log.info("consuming %s as %r", self.where, self.consumer)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._consume, client)
                tg.start_soon(self._claim_loop, client)
                tg.start_soon(self._lag_loop, client)
                task_status.started()
        finally:
            self._connected = False
            self._reason = "stopped"
            with anyio.move_on_after(1, shield=True):
                await client.aclose()

    async def _ensure_group(self, client: redis.asyncio.Redis) -> None:
        cfg = self.config
        try:
            await client.xgroup_create(cfg.stream, cfg.group, id=cfg.start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self, client: redis.asyncio.Redis) -> None:
        cfg = self.config
        streams_new: dict[Any, Any] = {cfg.stream: ">"}
        recover = True
        # Reconnection waits: the shared backoff, then its longest wait for as long as
        # Redis is away. No jitter, so the waits stay what they were: 0.05 s doubling up
        # to reconnect_max_s.
        backoff = RetryPolicy(
            max_retries=100, backoff_s=0.05, max_backoff_s=cfg.reconnect_max_s, jitter=False
        )
        delays: Iterator[float] | None = None
        while True:
            try:
                if recover:
                    await self._recover_own(client)
                    recover = False
                resp = await client.xreadgroup(
                    cfg.group, self.consumer, streams_new, count=cfg.count, block=cfg.block_ms
                )
                self._connected = True
                delays = None  # connected again: the next loss starts the backoff over
                entries = _entries(resp)
                if entries:
                    await self._handle(client, entries)
            except ResponseError as exc:
                if _gone(exc):
                    # The stream or group was deleted under us: make them again and go on.
                    _log.warning(
                        "%s: %s; creating the group again", self.where, describe_exception(exc)
                    )
                    try:
                        await self._ensure_group(client)
                        recover = True
                        continue
                    except ResponseError as again:  # e.g. the key is now of another type
                        exc = again
                # Any other error answer (the key holds another type, the user lost a
                # permission, the server is out of memory) is the operator's to mend: the
                # source is down with Redis' own words as its reason, and tries again, so
                # that the endpoint keeps serving and heals when the cause is gone.
                self._refused(exc)
                if delays is None:
                    delays = chain(backoff.delays(), repeat(backoff.max_backoff_s))
                delay = next(delays)
                _log.error("%s: %s; retrying in %.2fs", self.where, describe_exception(exc), delay)
                await anyio.sleep(delay)
                recover = True
            except CONNECTION_ERRORS as exc:
                self._lost(exc)
                self._reconnects += 1
                if delays is None:
                    delays = chain(backoff.delays(), repeat(backoff.max_backoff_s))
                delay = next(delays)
                _log.warning(
                    "%s: connection lost (%s); retrying in %.2fs",
                    self.where,
                    describe_exception(exc),
                    delay,
                )
                await anyio.sleep(delay)
                recover = True  # what we read before the loss may be unacknowledged

    async def _recover_own(self, client: redis.asyncio.Redis) -> None:
        """Read this consumer's own pending entries (id "0" onwards) until none is left."""
        cfg = self.config
        last = "0"
        while True:
            resp = await client.xreadgroup(
                cfg.group, self.consumer, {cfg.stream: last}, count=cfg.count
            )
            entries = _entries(resp)
            if not entries:
                return
            self._recovered += len(entries)
            await self._handle(client, entries)
            last = _s(entries[-1][0])

    async def _handle(
        self, client: redis.asyncio.Redis, entries: Sequence[tuple[Any, dict[bytes, bytes] | None]]
    ) -> None:
        """Fold the entries, then acknowledge them all: an entry that cannot be decoded
        is copied to the dead-letter stream with its reason (in the same ``MULTI`` as
        the acknowledgement, so a crash between the two cannot drop it) rather than
        re-delivered forever; a trimmed one is counted as lost. The intake counts every
        rejection, as it does for HTTP bodies."""
        intake = self.intake
        ids = []
        dead: list[tuple[Any, dict[bytes, bytes], str]] = []
        events = 0
        trimmed = 0
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:  # deleted or trimmed while pending
                trimmed += 1
                continue
            body = _body(fields)
            try:
                if body is None:
                    fields_seen = sorted(_s(k) for k in fields)
                    raise intake.refuse_body(
                        f"no msgpack or json field (fields: {fields_seen})", value=fields_seen
                    )
                result = intake.fold_body(
                    *body, lifecycle=self.config.lifecycle, setting="source.redis.lifecycle"
                )
            except EventError as exc:  # counted by the intake
                _log.warning("%s: entry %s: %s", self.where, _s(entry_id), exc)
                dead.append((entry_id, fields, str(exc)))
                continue
            events += result.accepted
        if trimmed:
            intake.lost(trimmed)
            self._trimmed += trimmed
        if events:
            delta = Delta(self.name, messages=events, stream=self.key)
            intake.aggregator.fold_deltas([delta])
        cfg = self.config
        if dead:
            async with client.pipeline(transaction=True) as pipe:
                for entry_id, fields, reason in dead:
                    letter: dict[Any, Any] = {
                        **fields,
                        b"dead_reason": reason,
                        b"dead_id": entry_id,
                        b"dead_group": cfg.group,
                        b"dead_consumer": self.consumer,
                    }
                    pipe.xadd(
                        self.dead_stream, letter, maxlen=cfg.dead_letter_maxlen, approximate=True
                    )
                pipe.xack(cfg.stream, cfg.group, *ids)
                await pipe.execute()
            self._dead += len(dead)
        else:
            await client.xack(cfg.stream, cfg.group, *ids)
        self._entries += len(ids)
        self._events += events

    async def _claim_loop(self, client: redis.asyncio.Redis) -> None:
        cfg = self.config
        idle_ms = int(cfg.claim_idle_s * 1000)
        while True:
            await anyio.sleep(cfg.claim_interval_s)
            try:
                await self.claim(client, idle_ms)
                if cfg.consumer_idle_s is not None:
                    await self.remove_idle_consumers(client, int(cfg.consumer_idle_s * 1000))
            except (*CONNECTION_ERRORS, ResponseError) as exc:  # NOGROUP: the reader recreates it
                _log.debug("%s: claim skipped: %s", self.where, describe_exception(exc))

    async def claim(self, client: redis.asyncio.Redis, idle_ms: int) -> int:
        """Take over and fold the entries idle for ``idle_ms`` or more; returns how many."""
        cfg = self.config
        start: Any = "0-0"
        taken = 0
        for _ in range(100_000):  # bounded: each round moves the cursor forward
            reply = await client.xautoclaim(
                cfg.stream, cfg.group, self.consumer, idle_ms, start, count=cfg.count
            )
            start, claimed = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if claimed:
                taken += len(claimed)
                self._claimed += len(claimed)
                _log.info("%s: claimed %d idle entries", self.where, len(claimed))
                await self._handle(client, claimed)
            if deleted:  # XAUTOCLAIM dropped them from the pending list itself
                self.intake.lost(len(deleted))
                self._trimmed += len(deleted)
            if _s(start) == "0-0":
                break
        return taken

    async def remove_idle_consumers(self, client: redis.asyncio.Redis, idle_ms: int) -> list[str]:
        """Remove the other consumers idle for ``idle_ms`` or more that hold no pending
        entry (``claim`` takes those first); returns their names. A consumer that still
        holds entries is left for the next pass: removing it would drop them from the
        pending list, unacknowledged and never delivered again. One script, so that the
        check and the removal are one step for the server (no read in between)."""
        cfg = self.config
        got = await client.eval(_DELETE_IDLE, 1, cfg.stream, cfg.group, self.consumer, idle_ms)
        removed = [_s(n) for n in got or ()]
        if removed:
            self._removed += len(removed)
            _log.info("%s: removed idle consumers %s", self.where, ", ".join(removed))
        return removed

    async def _lag_loop(self, client: redis.asyncio.Redis) -> None:
        while True:
            await anyio.sleep(self.config.lag_interval_s)
            try:
                await self._read_lag(client)
            except (*CONNECTION_ERRORS, ResponseError) as exc:
                _log.debug("%s: lag not read: %s", self.where, describe_exception(exc))

    async def _read_lag(self, client: redis.asyncio.Redis) -> None:
        groups = await client.xinfo_groups(self.config.stream)
        for g in groups:
            if _s(g.get("name")) == self.config.group:
                lag = g.get("lag")
                self._lag = int(lag) if lag is not None else None
                self._pending = int(g.get("pending") or 0)
                return
