"""``hardening()``: the ``cors``, ``rate_limit`` and ``auth`` sections of a
MetricsEndpoint's config (``settings``) turned into ``create_app`` arguments.

The order of the layers, outermost first: CORS (Litestar's; a preflight is answered
before anything else, since browsers send no credentials with it), then the rate limit
(so failed logins are limited too), then authentication, then the route.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware

from .auth import AuthCounts, BearerAuthMiddleware, BearerTokens
from .dashboard import DASHBOARD_PATH
from .guard_metrics import SecurityCollector
from .ratelimit import HEALTH_PATHS, RateLimitMiddleware, RateLimits, TokenBucketLimiter

if TYPE_CHECKING:
    from ..views.tick_cache import TickCache
    from .settings import AuthSettings, CorsSettings, RateLimitSettings

__all__ = ("hardening",)


def hardening(
    *,
    cors: CorsSettings | None,
    rate_limit: RateLimitSettings | None,
    auth: AuthSettings | None,
    component: str,
    clock: Callable[[], float] = time.monotonic,
    service: TickCache | None = None,
    ingest_path: str | None = None,
    write_paths: Collection[str] = (),
) -> dict[str, Any]:
    """``create_app`` keyword arguments (``cors``, ``middleware``) for these sections;
    with ``service``, what the guards refuse is also counted in its exposition.
    ``ingest_path`` (``POST /events``) is left to ingest's own guard: a read token
    must not admit a write, nor an ingest token need a read token beside it; so are the
    other routes that write through the same guard (``write_paths``: ``POST /v1/traces``).

    Reads the bearer tokens from the environment now, so a missing variable stops the
    start with a ``ConfigError`` rather than failing every request later.
    """
    middleware: list[DefineMiddleware] = []
    limits: RateLimits | None = None
    counts: AuthCounts | None = None
    if rate_limit is not None:
        per_s = rate_limit.per_s
        health = rate_limit.health_requests or rate_limit.requests * 10
        limits = RateLimits(
            TokenBucketLimiter(
                rate_limit.requests, per_s, max_clients=rate_limit.max_clients, clock=clock
            ),
            TokenBucketLimiter(health, per_s, max_clients=rate_limit.max_clients, clock=clock),
        )
        middleware.append(DefineMiddleware(RateLimitMiddleware, limits=limits))
    if auth is not None:
        tokens = BearerTokens.from_env(auth.bearer_tokens_env, component=component)
        open_paths = frozenset() if auth.protect_health else HEALTH_PATHS
        # The dashboard page holds no figures (its /stream does, and asks for the token):
        # a browser navigating to it cannot send an Authorization header.
        open_paths |= {DASHBOARD_PATH}
        if ingest_path is not None:
            open_paths |= {ingest_path}
        open_paths |= set(write_paths)
        counts = AuthCounts()
        middleware.append(
            DefineMiddleware(
                BearerAuthMiddleware, tokens=tokens, open_paths=open_paths, counts=counts
            )
        )
    cors_config = None
    if cors is not None:
        headers = list(cors.allow_headers)
        if auth is not None and "authorization" not in {h.lower() for h in headers}:
            headers.append("Authorization")
        cors_config = CORSConfig(
            allow_origins=list(cors.allow_origins),
            allow_methods=list(cors.allow_methods),
            allow_headers=headers,
            expose_headers=list(cors.expose_headers),
            allow_credentials=cors.allow_credentials,
            max_age=cors.max_age,
        )
    if service is not None and (limits is not None or counts is not None):
        service.add_builtin_collector(SecurityCollector(limits, counts))
    return {"cors": cors_config, "middleware": middleware}
