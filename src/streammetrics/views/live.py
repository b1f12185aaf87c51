"""The live feed behind ``GET /stream``: one compact snapshot per tick to every client.

Why a hub and not a loop per client: a hundred dashboards must cost one snapshot and one
JSON encoding per tick, not a hundred. The service publishes each default-view snapshot
here; a frame is encoded the first time a client needs it and shared by every client.
Each client keeps only the version it last sent: a slow client skips to the newest frame
instead of queueing old ones, so memory stays bounded whatever the clients do.

Long-lived event streams fail in two known ways, connections that are never closed and
new clients refused because dead ones still fill the connection limit; answered here:
heartbeats every ``heartbeat_s`` so proxies and clients notice a dead peer, a slot freed
as soon as the client goes (Litestar cancels the stream on ``http.disconnect``), a
connection limit that refuses with a clear reason, and ``close()`` on shutdown ending
every stream with a ``shutdown`` event instead of leaving it to a timeout.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Final

import anyio
import msgspec
from litestar.response import ServerSentEventMessage

from ..windows import VIEWS

if TYPE_CHECKING:
    from ..snapshot import Snapshot

__all__ = ("LIVE_WINDOWS", "LiveConfig", "LiveFeed", "LiveStatistics", "compact")

#: Columns of ``comps`` rows in a frame (sent once per frame as ``cols``).
COLUMNS: Final = (
    "name",
    "type",
    "status",
    "healthy",
    "health",
    "items_per_second",
    "error_rate",
    "p99",
    "items_processed",
    "errors_encountered",
    "breaker",
    "last_error",
)
#: The windows a client may ask the per-component figures over (``?window=``).
LIVE_WINDOWS: Final[tuple[str, ...]] = tuple(f"{s}s" for s in VIEWS)
_RETRY_MS: Final = 3000
#: Floor of the feed's pace: a service ticking at 0 (tests) must not spin the stream.
_MIN_TICK_S: Final = 0.05
#: Makes the figures fresh (the service's ``snapshot``), publishing them to the feed.
Refresh = Callable[[], Awaitable[None]]
_MAX_REASONS: Final = 50


class LiveConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``config.dashboard`` of a MetricsEndpoint: the ``/dashboard`` page and its feed."""

    enabled: bool = True
    """Serve ``GET /dashboard`` and ``GET /stream``."""
    max_clients: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 100
    """Stream connections at once; one more is answered 503 with the reason."""
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 15.0
    """A comment line after this long without a frame, so a dead peer is noticed."""


class LiveStatistics(msgspec.Struct, frozen=True):
    clients: int
    max_clients: int
    refused: int
    published: int
    encoded: int
    frames_sent: int
    closed: bool


class _Frame(msgspec.Struct, frozen=True):
    t: float
    name: str
    status: str
    score: float
    uptime: float
    counts: dict[str, int]
    system: dict[str, float | None]
    cols: tuple[str, ...]
    comps: list[tuple[object, ...]]
    alerts: list[dict[str, object]]
    pending: int
    reasons: list[str]
    errors: list[str]
    tick_s: float
    heartbeat_s: float
    window_s: int
    """The window of every ``comps`` rate, error rate and p99 (the client's choice)."""
    health_window_s: int
    """The window health (scores, ``reasons``) and the ``system`` figures are judged over."""


def _sig(x: float | None) -> float | None:
    """Four significant digits: what a dashboard shows, a third of the digits to send."""
    return None if x is None else float(f"{x:.4g}")


def compact(snap: Snapshot, name: str, tick_s: float, heartbeat_s: float, window: str) -> bytes:
    """The JSON of one frame: what the dashboard draws and nothing more.

    ``window`` (``10s``, ``60s``, ``300s``) is the window of the per-component figures;
    the feed passes the one health is judged over unless the client asks for another,
    so a row's error rate and the deduction it earned are the same figure. A component
    without a breaker has ``breaker: null``.
    """
    perf = snap.performance
    judged = perf.window_seconds
    default = window == f"{judged}s"
    breakers = snap.circuit_breakers
    comps: list[tuple[object, ...]] = []
    for cname, c in snap.detailed_components.items():
        w = c.windows.get(window)
        b = breakers.get(cname)
        rate: float | None
        errors: float | None
        p99: float | None
        if w is not None:
            rate, errors, p99 = w.items_per_second, w.error_rate, w.p99
        elif default:  # a snapshot without per-window views still has its own
            rate, errors, p99 = c.items_per_second, c.error_rate, c.latency.p99
        else:
            rate = errors = p99 = None
        comps.append(
            (
                cname,
                c.type,
                c.status,
                c.is_healthy,
                c.health,
                _sig(rate),
                _sig(errors),
                _sig(p99),
                c.items_processed,
                c.errors_encountered,
                b.state if b is not None else None,
                c.last_error,
            )
        )
    frame = _Frame(
        t=snap.timestamp,
        name=name,
        status=snap.system_status,
        score=snap.health_score,
        uptime=round(snap.uptime_seconds, 1),
        counts={
            "total": snap.components.total,
            "healthy": snap.components.healthy,
            "running": snap.components.running,
        },
        system={
            "items_per_second": _sig(perf.items_per_second),
            "error_rate": _sig(perf.error_rate),
            "message_rate": perf.message_rate,
            "p99": _sig(perf.latency.p99),
            "memory_usage_mb": perf.memory_usage_mb,
            "cpu_usage_percent": perf.cpu_usage_percent,
            "window_seconds": float(perf.window_seconds),
        },
        cols=COLUMNS,
        comps=comps,
        alerts=[
            {
                "level": a.level,
                "name": a.name,
                "message": a.message,
                "component": a.component,
                "since": a.since,
            }
            for a in snap.alerts
            if a.state == "firing"
        ],
        pending=len(snap.pending_alerts),
        reasons=[
            f"{d.component + ': ' if d.component else ''}{d.reason} (-{d.penalty:g})"
            for d in snap.reasons[:_MAX_REASONS]
        ],
        errors=list(snap.errors),
        tick_s=tick_s,
        heartbeat_s=heartbeat_s,
        window_s=int(window.removesuffix("s")),
        health_window_s=judged,
    )
    return msgspec.json.encode(frame)


def _sse(event: str, data: bytes, ident: int | None = None) -> bytes:
    """One event, framed by Litestar with ``\n`` line ends (as the feed has always sent
    them) and encoded here, once, for every client that sends it."""
    return ServerSentEventMessage(data=data, event=event, id=ident, sep="\n").encode()


_KEEP_ALIVE: Final = ServerSentEventMessage(data=None, comment="keep-alive", sep="\n").encode()
_SHUTDOWN: Final = _sse("shutdown", b'{"detail":"the endpoint is shutting down"}')


class _Slot:
    """One client's place under the limit; released exactly once, however it ends."""

    __slots__ = ("_feed", "released")

    def __init__(self, feed: LiveFeed) -> None:
        self._feed = feed
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._feed._clients -= 1


class LiveFeed:
    """The snapshots of one endpoint, as Server-Sent Events frames."""

    def __init__(
        self,
        config: LiveConfig | None = None,
        *,
        name: str = "metrics_endpoint",
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or LiveConfig()
        self.name = name
        self.tick_s = max(tick_s, _MIN_TICK_S)
        self.clock = clock
        self._snap: Snapshot | None = None
        self._version = 0
        #: The encoded frame of the current version, per window (at most one per window).
        self._frames_by_window: dict[str, tuple[int, bytes]] = {}
        self._unavailable: str | None = None
        self._changed = anyio.Event()
        self._closed = False
        self._clients = 0
        self._refused = self._published = self._encoded = self._sent = 0

    # -- the producer side -----------------------------------------------------------------

    def publish(self, snap: Snapshot) -> None:
        """A new snapshot (cheap: encoding waits until a client needs it)."""
        if snap is self._snap:
            return
        self._snap = snap
        self._unavailable = None
        self._bump()

    def unavailable(self, detail: str) -> None:
        """No figures right now (no harness): clients are told, once per change."""
        if self._unavailable != detail:
            self._unavailable = detail
            self._snap = None
            self._bump()

    def _bump(self) -> None:
        self._version += 1
        self._published += 1
        self._changed.set()
        self._changed = anyio.Event()

    def open(self) -> None:
        """Accept clients again (an endpoint that is run a second time)."""
        self._closed = False

    def close(self) -> None:
        """End every stream with a ``shutdown`` event and refuse new ones."""
        if not self._closed:
            self._closed = True
            self._changed.set()

    # -- the client side -------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why a new client would be refused now, or None."""
        if not self.config.enabled:
            return "the live stream is disabled (config.dashboard.enabled: false)"
        if self._closed:
            return "the endpoint is shutting down"
        if self._clients >= self.config.max_clients:
            return (
                f"too many stream clients: {self._clients} connected, the limit is "
                f"{self.config.max_clients} (config.dashboard.max_clients)"
            )
        return None

    def connect(
        self,
        interval_s: float | None = None,
        refresh: Refresh | None = None,
        window: str | None = None,
    ) -> AsyncIterator[bytes]:
        """A client's frames; raises ``LookupError`` with the reason when refused.

        ``interval_s`` throttles this client (at least the tick); ``refresh`` is awaited
        when no snapshot arrived for two ticks (a service nobody ticks), and once at the
        start so the first frame comes at once. ``window`` (one of ``LIVE_WINDOWS``) is
        the window of the per-component figures; None: the one health is judged over.
        """
        if window is not None and window not in LIVE_WINDOWS:
            raise ValueError(f"window must be one of {', '.join(LIVE_WINDOWS)}; got {window!r}")
        reason = self.refusal()
        if reason is not None:
            self._refused += 1
            raise LookupError(reason)
        self._clients += 1
        slot = _Slot(self)
        gen = self._frames(slot, max(interval_s or 0.0, self.tick_s), refresh, window)
        # A stream that is cancelled before it ever ran never reaches its finally.
        weakref.finalize(gen, slot.release)
        return gen

    async def _frames(
        self, slot: _Slot, interval: float, refresh: Refresh | None, window: str | None
    ) -> AsyncIterator[bytes]:
        try:
            # Written out, not a ServerSentEventMessage: Litestar puts the comment before
            # the retry field, and clients have always seen the retry first.
            yield f"retry: {_RETRY_MS}\n: {self.name} live stream\n\n".encode()
            if refresh is not None:
                await refresh()
            sent = -1
            last_out = self.clock()
            last_frame = float("-inf")
            while True:
                if self._closed:
                    yield _SHUTDOWN
                    return
                now = self.clock()
                if self._version != sent and now - last_frame >= interval * 0.95:
                    sent = self._version
                    chunk = self._current(window)
                    if chunk is not None:
                        self._sent += 1
                        last_frame = last_out = now
                        yield chunk
                        continue
                if now - last_out >= self.config.heartbeat_s:
                    last_out = now
                    yield _KEEP_ALIVE
                    continue
                # Sleep until the next snapshot, the throttle, or the heartbeat is due.
                wait = self.config.heartbeat_s - (now - last_out)
                if self._version != sent:
                    wait = min(wait, interval - (now - last_frame))
                else:
                    wait = min(wait, 2 * self.tick_s)
                changed = self._changed
                with anyio.move_on_after(max(wait, 0.0)):
                    await changed.wait()
                if (
                    refresh is not None
                    and self._version == sent
                    and not self._closed
                    and self.clock() - last_frame >= 2 * self.tick_s
                ):
                    await refresh()
        finally:
            slot.release()

    def _current(self, window: str | None) -> bytes | None:
        if self._unavailable is not None:
            body = msgspec.json.encode(
                {"error": "harness unavailable", "detail": self._unavailable}
            )
            return _sse("unavailable", body, self._version)
        snap = self._snap
        if snap is None:
            return None
        # Clients asking for the default window by name share the default's encoding.
        key = window or f"{snap.performance.window_seconds}s"
        cached = self._frames_by_window.get(key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        body = compact(snap, self.name, self.tick_s, self.config.heartbeat_s, key)
        chunk = _sse("snapshot", body, self._version)
        self._frames_by_window[key] = (self._version, chunk)
        self._encoded += 1
        return chunk

    def statistics(self) -> LiveStatistics:
        return LiveStatistics(
            clients=self._clients,
            max_clients=self.config.max_clients,
            refused=self._refused,
            published=self._published,
            encoded=self._encoded,
            frames_sent=self._sent,
            closed=self._closed,
        )
