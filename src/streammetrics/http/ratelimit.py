"""Per-client rate limiting of the metrics API: a token bucket per client address.

Why not Litestar's ``RateLimitMiddleware``: it counts in fixed windows of whole units
(second, minute, hour, day), so neither ``per: 500ms`` nor ``per: 10s`` can be said; it
has one limit for every route (``/health`` can only be excluded, not given its own
higher limit); it keeps a list of every request's timestamp per client and re-encodes it
as JSON on each request; and it answers 429 without ``Retry-After``. A token bucket is a
few lines, costs O(1) per request, lets a scraper's short bursts through while holding
its sustained rate, and knows exactly when the next token comes.

The limiters live outside the middleware: Litestar builds one middleware instance per
route, and a client's budget must be shared by every route in its class.

A refusal is the cheapest answer the app makes: its status line and headers are encoded
once per limiter, its body is one small msgspec encode, and it is sent straight through
the ASGI ``send`` (so CORS and the security headers still apply), not raised through
Litestar's exception handling: under a flood most requests are refusals, and every
microsecond spent on one is taken from the requests that are served.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import msgspec
from litestar.enums import ScopeType

from .responses import ErrorResponse

if TYPE_CHECKING:
    from litestar.types import (
        ASGIApp,
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        Receive,
        Scope,
        Send,
    )

__all__ = (
    "HEALTH_PATHS",
    "RateLimitMiddleware",
    "RateLimits",
    "TokenBucketLimiter",
    "TokenBucketStatistics",
)

#: A client with no address (a Unix socket, a test transport) shares this key.
_NO_ADDRESS: Final = "-"
_ENCODER: Final = msgspec.json.Encoder()


class TokenBucketStatistics(msgspec.Struct, frozen=True):
    clients: int
    """Client addresses tracked now (bounded by ``max_clients``)."""
    allowed: int
    limited: int
    """Requests refused with 429."""
    evicted: int
    """Clients forgotten to stay within ``max_clients`` (they start again with a full bucket)."""


class TokenBucketLimiter:
    """``capacity`` tokens per client, refilled at ``capacity / per_s`` tokens a second.

    A client may send ``capacity`` requests at once and then one every ``per_s / capacity``
    seconds. Memory is bounded: at most ``max_clients`` buckets, the least recently seen
    forgotten first (it has had the longest to refill, so forgetting it changes least).
    """

    def __init__(
        self,
        capacity: int,
        per_s: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or per_s <= 0 or max_clients < 1:
            raise ValueError(
                f"need capacity >= 1, per_s > 0 and max_clients >= 1; "
                f"got {capacity!r}, {per_s!r}, {max_clients!r}"
            )
        self.capacity = capacity
        self.per_s = per_s
        self.rate = capacity / per_s
        self.max_clients = max_clients
        self.clock = clock
        # client -> (tokens, when counted); dict order is recency order (oldest first)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._allowed = self._limited = self._evicted = 0

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 when allowed, else the seconds until one is due."""
        now = self.clock()
        entry = self._buckets.pop(client, None)
        if entry is None:
            tokens = float(self.capacity)
            if len(self._buckets) >= self.max_clients:
                del self._buckets[next(iter(self._buckets))]
                self._evicted += 1
        else:
            tokens = min(self.capacity, entry[0] + (now - entry[1]) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            self._allowed += 1
            return 0.0
        self._buckets[client] = (tokens, now)
        self._limited += 1
        return (1.0 - tokens) / self.rate

    def statistics(self) -> TokenBucketStatistics:
        return TokenBucketStatistics(
            clients=len(self._buckets),
            allowed=self._allowed,
            limited=self._limited,
            evicted=self._evicted,
        )


#: The health routes, which share the ``health`` bucket.
HEALTH_PATHS: Final = frozenset(("/health", "/health/live", "/health/ready"))


class RateLimits:
    """The limiter of each route class: the health routes (``/health`` and its probes)
    apart, everything else together."""

    def __init__(self, default: TokenBucketLimiter, health: TokenBucketLimiter) -> None:
        self.default = default
        self.health = health

    def for_path(self, path: str) -> TokenBucketLimiter:
        return self.health if path in HEALTH_PATHS else self.default


def _describe(limiter: TokenBucketLimiter) -> str:
    return f"{limiter.capacity} requests per {limiter.per_s:g}s"


def _body(body: bytes) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": body, "more_body": False}


class _Refusal:
    """A limiter's 429, its fixed parts encoded once: the headers and body the app's
    error handler gives any ``HTTPException`` (``{"error", "detail", "status_code"}``)."""

    def __init__(self, limiter: TokenBucketLimiter) -> None:
        self.description = _describe(limiter)
        self.policy = f"{limiter.capacity};w={limiter.per_s:g}".encode()

    async def send(self, send: Send, wait: float) -> None:
        # Retry-After is whole seconds (RFC 9110): round up, so a client that obeys it
        # finds a token waiting.
        retry = max(1, math.ceil(wait))
        body = _ENCODER.encode(
            ErrorResponse(
                "too many requests",
                f"rate limit of {self.description} per client exceeded; retry in {wait:.3f}s",
                429,
            )
        )
        headers = [
            (b"retry-after", str(retry).encode()),
            (b"ratelimit-policy", self.policy),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 429,
            "headers": headers,
        }
        await send(start)
        await send(_body(body))


class RateLimitMiddleware:
    """Refuses a client's request with 429 once its bucket is empty.

    The client is the connection's peer address. Behind a reverse proxy that is the
    proxy, unless the endpoint lists it in ``trusted_proxies`` (then the server puts the
    client its ``X-Forwarded-For`` names in ``scope["client"]``): forwarded headers
    from anyone else are never believed, or a client could pick its own bucket.
    """

    def __init__(self, app: ASGIApp, *, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits
        self._refusals = {lim: _Refusal(lim) for lim in (limits.default, limits.health)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            client = scope.get("client")
            key = client[0] if client else _NO_ADDRESS
            limiter = self.limits.for_path(scope["path"])
            wait = limiter.take(key)
            if wait > 0.0:
                await self._refusals[limiter].send(send, wait)
                return
        await self.app(scope, receive, send)
