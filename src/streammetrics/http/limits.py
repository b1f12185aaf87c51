"""Bounds on every connection of an endpoint: the ``limits:`` section of its config and
their enforcement inside uvicorn's httptools protocol.

Why in the protocol and not in the app: a request head that never ends, a client that
never sends one and a connection flood all cost memory and file descriptors before the
ASGI app sees anything, so only the code that reads the socket can refuse them. httptools
buffers a header line until it ends, with no bound, so the protocol feeds it at most
``max_header_bytes`` of a request head and answers 431 past them.

How ``/health`` stays reachable when the connections are all taken (``max_connections``
open): a new connection first *evicts* the connection idle the longest (one that has no
request in flight: a fresh one that has sent no complete head yet, a slowloris, a
keep-alive one between requests), so idle and slow connections can never lock the
endpoint up. When every connection is busy (streams, requests in flight) the new one is
taken into a small reserve (``health_reserve``) that serves the health routes only, once,
then closes; anything else there is answered 503 with ``Retry-After``. Past the reserve
too, 503 at once. Every refusal is counted (``ConnectionCollector``).

How a client that ignores ``Retry-After`` is kept from costing the loop: after a 429
(a rate limit's refusal) on a route other than the health routes, the connection's next
such request is *held* (parsed, not started) until the 429's ``Retry-After`` has passed,
then worked on as usual. The connection is still read, so that a client that goes away
is noticed at once; a client waiting for its answer sends nothing meanwhile, and a
pipelined request waits behind the held one with its connection unread (uvicorn's flow
control). Each held connection owns one loop timer, cancelled when it closes; while held
it counts as idle, so it is the first evicted at the connection cap. A health request is
never held: the health routes have their own rate limit, and another route's refusal
must never delay a probe. Once its hold is over, the request is worked on in a lane of
its own, ``held_concurrent_requests`` at a time: a thousand connections refused together
come back together, and on one event loop a request's every step waits behind every step
of the requests worked on at once, so a new connection (a probe) and the clients that
were never refused must not queue behind them.

A refusal is written, then the connection is half-closed and what the client still sends
is read and dropped for a moment (``_LINGER_S``) before the socket is closed: closing a
socket with unread data makes the kernel send a reset, which can destroy the answer
before the client reads it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import resource
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from ..errors import StreamMetricsError
from .coalesce import HeadHeld
from .ratelimit import HEALTH_PATHS

if TYPE_CHECKING:
    from asyncio import TimerHandle

    from prometheus_client.metrics_core import Metric

__all__ = (
    "ConnectionCollector",
    "ConnectionGuard",
    "ConnectionLimits",
    "ConnectionStatistics",
    "raise_fd_limit",
)

_log = logging.getLogger("streammetrics.http")

Rejection = Literal["header_too_large", "header_timeout", "body_timeout", "connection_limit"]
Closure = Literal["idle_timeout", "evicted"]
REJECTIONS: Final[tuple[Rejection, ...]] = (
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "connection_limit",
)
CLOSURES: Final[tuple[Closure, ...]] = ("idle_timeout", "evicted")

#: Seconds a refused connection is read (and dropped) after its answer, before it closes.
_LINGER_S: Final = 0.5
#: Bytes a refused connection may still send while it lingers; past them it closes at once.
_LINGER_BYTES: Final = 256 * 1024
#: Refused connections lingering at once, at most; past them a refusal closes at once.
_MAX_LINGERING: Final = 256
#: Below the process's file-descriptor limit, what is kept for everything that is not a
#: connection (files, the Redis client, the event loop's own): the larger of these.
_FD_HEADROOM_MIN: Final = 256
_FD_HEADROOM_SHARE: Final = 16


class ConnectionLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``config.limits`` of a MetricsEndpoint: how many connections, how large and how
    slow a request head may be, how long a connection may idle.

    The defaults hold for an endpoint scraped by Prometheus, probed by a load balancer and
    watched by a few hundred dashboards; a flood of idle connections is evicted instead
    of refused, so it never needs a larger cap.
    """

    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    """Open connections at once. At the cap a new connection evicts the one idle the
    longest; with none idle it goes to the health reserve. Clipped at start to the
    process's file-descriptor limit minus a headroom (a warning says so); the process
    raises its soft limit to the hard one first where it may."""
    health_reserve: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 8
    """Connections beyond ``max_connections`` that serve only ``/health``,
    ``/health/live`` and ``/health/ready`` (one request each, then closed); anything else
    on them, or a connection beyond them, is answered 503 with ``Retry-After``."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1_048_576)] = 32_768
    """Bytes of a request head (request line and headers) at most; a longer one is
    answered 431 and the connection closed."""
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """Seconds a request head may take to arrive, from the connection's start (or from
    the first byte of the next request on a keep-alive connection); past them the
    connection is closed (with a 408 if part of a head came)."""
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """Seconds a request body may take to arrive, from when the request is started (after
    any wait for ``max_concurrent_requests``); past them the request is answered 408 and
    the connection closed. The body's size is bounded apart (``max_body_bytes``)."""
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """Seconds a keep-alive connection may wait for its next request before it is
    closed."""
    retry_after_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 1
    """The ``Retry-After`` of a 503 for the connection limit, in seconds."""
    max_concurrent_requests: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64
    """Requests worked on at once, counted until their response starts (so a stream
    holds one only while it starts). More wait in arrival order, their connections not
    read meanwhile. The health routes never wait: on one event loop every request in
    progress delays every other, so a flood of other requests would delay them too."""
    rate_limited_hold_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    """After a 429 with ``Retry-After`` (the rate limit's refusal), the connection's next
    request other than a health route's is held, unanswered, until that
    ``Retry-After`` has passed (at most this many seconds), then worked on as usual: a
    client that ignores ``Retry-After`` costs the event loop one read per refusal and no
    answer, while new connections and other clients are served. 0: never held."""
    held_concurrent_requests: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2
    """Requests worked on at once among those whose hold (``rate_limited_hold_s``) is over,
    apart from ``max_concurrent_requests``; more wait in arrival order, their connections
    not read meanwhile (and evicted first at the cap, as while held). However many
    connections keep asking through their 429s, they get this share of the event loop,
    and a new connection's request is not queued behind theirs."""


class ConnectionStatistics(msgspec.Struct, frozen=True):
    """An endpoint's connections now and what the limits refused or closed so far."""

    open: int
    """Connections open in the main pool."""
    reserve_open: int
    """Connections open in the health reserve."""
    max_connections: int
    """The cap in force (``max_connections``, clipped to the file-descriptor limit)."""
    health_reserve: int
    rejected: dict[str, int]
    """By reason: ``header_too_large`` (431), ``header_timeout`` (no head in time),
    ``body_timeout`` (408: a body not in within ``body_timeout_s``), ``connection_limit``
    (503)."""
    closed: dict[str, int]
    """Closed by the endpoint, by reason: ``idle_timeout``, ``evicted`` (idle at the cap)."""
    held: int = 0
    """Connections whose next request is held now, until the ``Retry-After`` of the 429
    they were answered (``rate_limited_hold_s``)."""
    held_requests: int = 0
    """Requests held so far after a 429 on their connection."""
    held_waiting: int = 0
    """Requests whose hold is over, waiting now for a place (``held_concurrent_requests``)."""


def raise_fd_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit where the system lets
    it (idempotent); the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            _log.info("file-descriptor limit stays at %d (raising it to %d: %s)", soft, target, exc)
        else:
            soft = target
    return soft


class ConnectionGuard:
    """One endpoint's connection bookkeeping: its limits, the connections open in the
    main pool (those idle, oldest first) and in the reserve, and the counts.

    Driven by the event loop's thread only (the protocol callbacks), so it needs no lock.
    """

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits if limits is not None else ConnectionLimits()
        self.max_connections = self.limits.max_connections
        self._open: set[GuardedHttpToolsProtocol] = set()
        self._reserve: set[GuardedHttpToolsProtocol] = set()
        #: Main-pool connections with no request in flight, the longest idle first.
        self._idle: dict[GuardedHttpToolsProtocol, None] = {}
        self.lingering = 0
        #: Requests started and not yet answering (never a health route's), and those
        #: waiting for a place, oldest first: those never held, and those held after a 429.
        self._lane = _Lane(self.limits.max_concurrent_requests)
        self._held_lane = _Lane(self.limits.held_concurrent_requests)
        self.rejected: dict[Rejection, int] = dict.fromkeys(REJECTIONS, 0)
        self.closed: dict[Closure, int] = dict.fromkeys(CLOSURES, 0)
        #: Connections holding a request after a 429 now, and requests held so far.
        self.held = 0
        self.held_requests = 0
        self._proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def trust_proxies(self, proxies: Iterable[str]) -> None:
        """The peers whose ``X-Forwarded-For`` the server believes (``serve``'s
        ``trusted_proxies``): their connections carry many clients' requests, so one
        client's 429 never holds the next request there."""
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in proxies)

    def is_proxy(self, host: str | None) -> bool:
        if not self._proxies or host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._proxies)

    def fit_to_fd_limit(self, component: str) -> None:
        """Raise the process's soft file-descriptor limit, then clip ``max_connections``
        so that it and the reserve stay below it with headroom (a warning when clipped);
        a ``StreamMetricsError`` when not even one connection fits."""
        soft = raise_fd_limit()
        if soft == resource.RLIM_INFINITY:
            return
        usable = soft - max(_FD_HEADROOM_MIN, soft // _FD_HEADROOM_SHARE)
        wanted = self.limits.max_connections + self.limits.health_reserve
        if wanted <= usable:
            self.max_connections = self.limits.max_connections
            return
        fitted = usable - self.limits.health_reserve
        if fitted < 1:
            raise StreamMetricsError(
                f"component {component!r}: config.limits cannot fit the file-descriptor "
                f"limit of {soft} (ulimit -n): it leaves {usable} for connections, "
                f"health_reserve is {self.limits.health_reserve}; raise the limit"
            )
        _log.warning(
            "component %r: config.limits.max_connections %d clipped to %d to stay below "
            "the file-descriptor limit of %d (ulimit -n) with headroom",
            component,
            self.limits.max_connections,
            fitted,
            soft,
        )
        self.max_connections = fitted

    def protocol_class(self) -> type[HttpToolsProtocol]:
        """The protocol for ``uvicorn.Config(http=...)``, bound to this guard."""
        return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"guard": self})

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            open=len(self._open),
            reserve_open=len(self._reserve),
            max_connections=self.max_connections,
            health_reserve=self.limits.health_reserve,
            rejected={k: v for k, v in self.rejected.items()},
            closed={k: v for k, v in self.closed.items()},
            held=self.held,
            held_requests=self.held_requests,
            held_waiting=len(self._held_lane.waiting),
        )

    # -- the protocol's side ------------------------------------------------------------

    def admit(self, conn: GuardedHttpToolsProtocol) -> Literal["main", "reserve", "refused"]:
        """Where a new connection goes, evicting the longest idle one at the cap."""
        if len(self._open) >= self.max_connections and self._idle:
            victim = next(iter(self._idle))
            self.release(victim)
            self.closed["evicted"] += 1
            victim.transport.close()
        if len(self._open) < self.max_connections:
            self._open.add(conn)
            self._idle[conn] = None
            return "main"
        if len(self._reserve) < self.limits.health_reserve:
            self._reserve.add(conn)
            return "reserve"
        return "refused"

    def busy(self, conn: GuardedHttpToolsProtocol) -> None:
        self._idle.pop(conn, None)

    def idle(self, conn: GuardedHttpToolsProtocol) -> None:
        if conn in self._open:
            self._idle.pop(conn, None)
            self._idle[conn] = None

    def release(self, conn: GuardedHttpToolsProtocol) -> None:
        self._open.discard(conn)
        self._reserve.discard(conn)
        self._idle.pop(conn, None)

    def hold(self, conn: GuardedHttpToolsProtocol) -> None:
        """``conn`` holds a request after a 429: counted, and evictable as an idle one."""
        self.held += 1
        self.held_requests += 1
        self.idle(conn)

    def unhold(self, conn: GuardedHttpToolsProtocol) -> None:
        self.held -= 1
        self.busy(conn)

    def start(
        self,
        conn: GuardedHttpToolsProtocol,
        cycle: RequestResponseCycle,
        app: ASGIApp,
        *,
        held: bool = False,
    ) -> None:
        """Start a request now if its lane has room (``max_concurrent_requests``, or
        ``held_concurrent_requests`` for one ``held`` after a 429), else queue it there
        (its connection not read until it starts)."""
        lane = self._held_lane if held else self._lane
        if lane.working < lane.limit:
            lane.working += 1
            conn.start_now(cycle, self._answering(app, conn, lane))
        else:
            conn.flow.pause_reading()
            conn.waiting = True
            lane.waiting.append((conn, cycle, app))
            if held:
                self.idle(conn)  # as while it was held: evicted first at the cap

    def _answering(self, app: ASGIApp, conn: GuardedHttpToolsProtocol, lane: _Lane) -> ASGIApp:
        """``app``, giving its place in ``lane`` back once its response starts (or it
        ends), and telling ``conn`` of a 429 (``GuardedHttpToolsProtocol.rate_limited``)."""
        guard = self

        async def counted(
            scope: MutableMapping[str, Any],
            receive: Callable[[], Awaitable[Any]],
            send: Callable[[Any], Awaitable[None]],
        ) -> None:
            placed = True

            def give_back() -> None:
                nonlocal placed
                if placed:
                    placed = False
                    guard._next(lane)

            async def sending(message: Any) -> None:
                if message["type"] == "http.response.start":
                    give_back()
                    if message["status"] == 429:
                        conn.rate_limited(message.get("headers", ()))
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                give_back()

        return counted

    def _next(self, lane: _Lane) -> None:
        lane.working -= 1
        while lane.waiting and lane.working < lane.limit:
            conn, cycle, app = lane.waiting.popleft()
            conn.waiting = False
            if conn.transport.is_closing():
                continue
            self.busy(conn)
            lane.working += 1
            conn.start_now(cycle, self._answering(app, conn, lane))


class _Lane:
    """Requests worked on at once (at most ``limit``) and those waiting, oldest first."""

    __slots__ = ("limit", "waiting", "working")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.working = 0
        self.waiting: deque[tuple[GuardedHttpToolsProtocol, RequestResponseCycle, ASGIApp]] = (
            deque()
        )


def _plain(status: int, message: str, *headers: tuple[bytes, bytes]) -> bytes:
    """A complete ``text/plain`` response that ends the connection."""
    body = message.encode()
    lines = [STATUS_LINE[status]]
    for name, value in (
        *headers,
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ):
        lines += [name, b": ", value, b"\r\n"]
    return b"".join([*lines, b"\r\n", body])


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def _health_only(app: ASGIApp, retry_after: bytes, guard: ConnectionGuard) -> ASGIApp:
    """``app`` for the health routes, a 503 for anything else (a reserve connection's)."""
    message = b"the connection limit is reached: only the health routes answer; retry later"

    async def reserve_app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("path") in HEALTH_PATHS:
            await app(scope, receive, send)
            return
        guard.rejected["connection_limit"] += 1
        headers = [
            (b"retry-after", retry_after),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(message)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": message})

    return reserve_app


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``ConnectionLimits`` enforced (``guard``, set by
    ``ConnectionGuard.protocol_class``)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.guard.limits
        self.timeout_keep_alive = limits.idle_timeout_s  # type: ignore[assignment]
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: TimerHandle | None = None
        self._linger_timer: TimerHandle | None = None
        self._lingered = 0
        self._pool: Literal["main", "reserve", "refused"] = "main"
        self.waiting = False
        #: Loop time until which a request other than a health route's is held (a 429's
        #: Retry-After), the request held and the timer that starts it.
        self._hold_until = 0.0
        self._held: tuple[RequestResponseCycle, ASGIApp] | None = None
        self._hold_timer: TimerHandle | None = None
        #: Ends a request whose body is not all in by ``body_timeout_s`` after it started.
        self._body_timer: TimerHandle | None = None
        self._holdable = True

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        self._pool = guard.admit(self)
        if self._pool == "refused":
            self._refuse(
                "connection_limit",
                _plain(
                    503,
                    "the connection limit is reached; retry later",
                    (b"retry-after", str(guard.limits.retry_after_s).encode()),
                ),
            )
            return
        if self._pool == "reserve":
            self.app = _health_only(self.app, str(guard.limits.retry_after_s).encode(), guard)
        self._holdable = not guard.is_proxy(self.client[0] if self.client else None)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        for timer in (self._head_timer, self._linger_timer, self._hold_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._hold_timer = self._body_timer = None
        if self._held is not None:
            self._held = None
            self.guard.held -= 1
        if self._linger_timer is not None:
            self._linger_timer = None
            self.guard.lingering -= 1
        self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None or self._pool == "refused":
            self._lingered += len(data)
            if self._lingered > _LINGER_BYTES:
                self.transport.close()
            return
        while data:
            if self._in_head:
                if self._head_timer is None:  # the next request on a keep-alive connection
                    self._arm_head_timer()
                room = self.guard.limits.max_header_bytes - self._head_bytes
                if room <= 0:
                    self._refuse(
                        "header_too_large",
                        _plain(
                            431,
                            "request head larger than "
                            f"{self.guard.limits.max_header_bytes} bytes (config.limits."
                            "max_header_bytes)",
                        ),
                    )
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            super().data_received(piece)
            if self.transport.is_closing():
                return

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._pool == "reserve" or cycle.scope["path"] in HEALTH_PATHS:
            self.start_now(cycle, app)
        elif self._hold_until and self.loop.time() < self._hold_until:
            self._hold(cycle, app)
        else:
            self.guard.start(self, cycle, app)

    # -- holding after a 429 -------------------------------------------------------------

    def rate_limited(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """This connection is being answered 429: hold its next request (other than a
        health route's) until the answer's ``Retry-After`` (whole seconds, as the rate
        limit writes it) has passed, at most ``rate_limited_hold_s``; never on a trusted
        proxy's connection (the 429 was one of its clients')."""
        most = self.guard.limits.rate_limited_hold_s
        if most <= 0 or not self._holdable:
            return
        for name, value in headers:
            if name.lower() == b"retry-after":
                try:
                    seconds = float(value)
                except ValueError:  # an HTTP date: not the rate limit's; nothing held
                    return
                if math.isfinite(seconds) and seconds > 0:
                    self._hold_until = self.loop.time() + min(seconds, most)
                return

    def _hold(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:
        """Keep the request unstarted until ``_hold_until``. The connection is not paused:
        a closed one must be seen closed (and its timer cancelled) at once."""
        self._held = (cycle, app)
        self.guard.hold(self)
        self._hold_timer = self.loop.call_at(self._hold_until, self._release_held)

    def _release_held(self) -> None:
        self._hold_timer = None
        held, self._held = self._held, None
        if held is None:
            return
        self.guard.unhold(self)
        if not self.transport.is_closing():
            self.guard.start(self, *held, held=True)

    def start_now(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:
        """Start the request's ASGI task; a request still sending its body has
        ``body_timeout_s`` from now to finish it (its wait for a start is not counted,
        since its connection is not read meanwhile)."""
        if cycle.more_body and _has_body(self.headers):
            self._body_timer = self.loop.call_later(
                self.guard.limits.body_timeout_s, self._body_timeout
            )
        super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        if self.waiting or self._held is not None:  # never started: nothing to finish
            self.transport.close()
        else:
            super().shutdown()

    # -- parser callbacks ----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.guard.busy(self)
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a new request, not an upgrade
            # its head and first body piece in one write (``coalesce``)
            cycle.transport = HeadHeld(self.transport, self.loop)  # type: ignore[assignment]
            if self._pool == "reserve":
                cycle.keep_alive = False  # one answer per reserve connection

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self.guard.idle(self)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.guard.closed["idle_timeout"] += 1
        super().timeout_keep_alive_handler()

    # -- refusals ------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.guard.limits.header_timeout_s, self._head_timeout
        )

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(
                "header_timeout",
                _plain(408, "request head not complete in time (config.limits.header_timeout_s)"),
            )
        else:  # nothing sent at all: a preconnect or an idle socket, closed without a word
            self._close_unanswered("header_timeout")

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_complete:
            # Answered before its body was in (a 413 says so at once): nothing to add.
            self._close_unanswered("body_timeout")
            return
        self._refuse(
            "body_timeout",
            _plain(408, "request body not complete in time (config.limits.body_timeout_s)"),
        )

    def _close_unanswered(self, reason: Rejection) -> None:
        """Count and close, with no answer to give."""
        self.guard.rejected[reason] += 1
        self.guard.release(self)
        self.transport.close()

    def _refuse(self, reason: Rejection, response: bytes) -> None:
        """Count, answer, half-close, and drop what still comes for ``_LINGER_S``."""
        guard = self.guard
        guard.rejected[reason] += 1
        guard.release(self)
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        transport = self.transport
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                # A response is being written (a stream): an answer now would corrupt it.
                transport.close()
                return
            # A request in progress with no answer yet: its app sees the client gone (and
            # whatever it still sends is dropped), and the refusal is the answer.
            cycle.disconnected = True
            cycle.message_event.set()
        transport.write(response)
        if guard.lingering >= _MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        guard.lingering += 1
        self._linger_timer = self.loop.call_later(_LINGER_S, transport.close)


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request head announces a body (uvicorn lower-cases the names)."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0 ")):
            return True
    return False


class ConnectionCollector(Collector):
    """An endpoint's connections and what its limits refused, as built-in families of
    ``/metrics`` (read during the render: it only reads counters)."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterable[Metric]:
        st = self.guard.statistics()
        opened = GaugeMetricFamily(
            "streammetrics_http_connections_open",
            "HTTP connections open, by pool (main; health_reserve: health routes only)",
            labels=["pool"],
        )
        opened.add_metric(["main"], st.open)
        opened.add_metric(["health_reserve"], st.reserve_open)
        cap = GaugeMetricFamily(
            "streammetrics_http_connections_limit",
            "HTTP connections allowed at once, by pool (config.limits, fitted to ulimit -n)",
            labels=["pool"],
        )
        cap.add_metric(["main"], st.max_connections)
        cap.add_metric(["health_reserve"], st.health_reserve)
        rejected = CounterMetricFamily(
            "streammetrics_http_connections_rejected",
            "HTTP connections refused by config.limits, by reason "
            "(header_too_large: 431, header_timeout, body_timeout: 408, connection_limit: 503)",
            labels=["reason"],
        )
        for reason, n in st.rejected.items():
            rejected.add_metric([reason], n)
        closed = CounterMetricFamily(
            "streammetrics_http_connections_closed",
            "Idle HTTP connections the endpoint closed, by reason "
            "(idle_timeout: keep-alive; evicted: the longest idle, at the connection limit)",
            labels=["reason"],
        )
        for reason, n in st.closed.items():
            closed.add_metric([reason], n)
        held = GaugeMetricFamily(
            "streammetrics_http_connections_held",
            "HTTP connections whose next request is held, unanswered, until the Retry-After of "
            "the 429 they were answered (config.limits.rate_limited_hold_s)",
            value=st.held,
        )
        held_requests = CounterMetricFamily(
            "streammetrics_http_requests_held",
            "Requests held after a 429 on their connection until its Retry-After passed",
            value=st.held_requests,
        )
        waiting = GaugeMetricFamily(
            "streammetrics_http_requests_held_waiting",
            "Requests whose hold after a 429 is over, waiting now for a place in their lane "
            "(config.limits.held_concurrent_requests)",
            value=st.held_waiting,
        )
        return [opened, cap, rejected, closed, held, held_requests, waiting]
