"""What makes the metrics API safe to expose: the ``cors``, ``rate_limit`` and ``auth``
sections of a MetricsEndpoint's config, the response headers every answer carries, and
``hardening()``, which turns the sections into ``create_app`` arguments.

CORS and auth are off by default (a loopback endpoint scraped by a local Prometheus
needs neither). The rate limit is on in every MetricsEndpoint (``RateLimitSettings()``:
1000 requests a second per client address, the health routes ten times that), a figure
no scraper, dashboard or load balancer comes near but a runaway client loop does. The
response headers cost nothing and follow OWASP's REST security guidance: an API response
is never sniffed or framed, and not cached unless its route says otherwise (the dashboard
page and its event stream).

The order of the layers, outermost first: CORS (Litestar's; a preflight is answered
before anything else, since browsers send no credentials with it), then the rate limit
(so failed logins are limited too), then authentication, then the route.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import msgspec
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..model.types import parse_duration
from .auth import AuthCounts, BearerAuthMiddleware, BearerTokens
from .ratelimit import HEALTH_PATHS, RateLimitMiddleware, RateLimits, TokenBucketLimiter

if TYPE_CHECKING:
    from litestar.types import Message, Scope
    from prometheus_client.metrics_core import Metric

    from .service import MetricsService

__all__ = (
    "SECURITY_HEADERS",
    "AuthSettings",
    "CorsSettings",
    "Duration",
    "RateLimitSettings",
    "SecurityCollector",
    "hardening",
    "security_headers",
)

#: Seconds as a number, or a string such as ``"1s"``, ``"500ms"``, ``"2m"``, ``"1h"``.
Duration = Annotated[float, msgspec.Meta(gt=0, le=86_400)] | str
DashboardPath: Final = "/dashboard"
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]
Method = Literal["GET", "HEAD", "POST", "OPTIONS"]

#: Added to every response that does not set them itself (OWASP REST Security Cheat Sheet).
SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "frame-ancestors 'none'"),
    ("referrer-policy", "no-referrer"),
)

_RAW_SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = tuple(
    (name.encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS
)


class CorsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Cross-origin access for web dashboards; no section, no CORS headers at all."""

    allow_origins: Annotated[list[str], msgspec.Meta(min_length=1)]
    """Origins whose pages may read the API (``https://grafana.example.com``); ``*`` in a
    part is a wildcard (``https://*.example.com``); ``"*"`` alone allows every origin."""
    allow_methods: list[Method] = msgspec.field(default_factory=lambda: ["GET"])
    """Methods a page may use; GET only unless more are listed."""
    allow_headers: list[str] = []
    """Request headers a page may send beyond the CORS-safelisted ones
    (``Authorization`` is added by itself when ``auth`` is on)."""
    expose_headers: list[str] = msgspec.field(
        default_factory=lambda: ["Retry-After", "RateLimit-Policy", "WWW-Authenticate"]
    )
    """Response headers a page's script may read."""
    allow_credentials: bool = False
    """Let pages send cookies or HTTP auth; never together with the ``*`` origin."""
    max_age: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 600
    """Seconds a browser may cache a preflight answer."""

    def __post_init__(self) -> None:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError(
                "cors.allow_credentials cannot be true while allow_origins has '*': "
                "any site could then read the API with its visitors' credentials"
            )


class RateLimitSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A token bucket per client address: ``requests`` at once, then ``requests`` per ``per``.

    The defaults are every MetricsEndpoint's limit: Prometheus scrapes a target once every
    few seconds, the dashboard is one page load and one long-lived ``/stream``, a load
    balancer probes a few times a second; a thousand a second leaves room for a hundred
    dashboards behind one proxy and still stops a client that loops on ``/metrics``.
    """

    requests: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 1000
    """Requests a client may make per ``per`` (and in one burst)."""
    per: Duration = 1.0
    """The period: seconds, or a duration such as ``1s``, ``500ms``, ``1m``."""
    health_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    """The health routes' own limit per ``per`` (``/health``, ``/health/live``,
    ``/health/ready``, counted together and apart from the rest), so that a scrape flood
    never makes a load balancer think the system is down (default: ten times
    ``requests``)."""
    max_clients: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000
    """Client addresses tracked at once (memory bound); the least recently seen is
    forgotten first."""

    def __post_init__(self) -> None:
        parse_duration(self.per, field="rate_limit.per", allow_zero=False, at_most=86_400)

    @property
    def per_s(self) -> float:
        return parse_duration(self.per, field="rate_limit.per", allow_zero=False, at_most=86_400)


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Bearer-token authentication; the tokens themselves are never in the blueprint."""

    bearer_tokens_env: EnvName = "STREAMMETRICS_TOKENS"
    """The environment variable holding the accepted tokens, separated by commas or
    spaces (several, so a token can be rotated without downtime). Read at startup: an
    unset or empty variable stops the start."""
    protect_health: bool = False
    """Require a token on ``/health``, ``/health/live`` and ``/health/ready`` too (load
    balancers and Kubernetes probes usually cannot send one)."""


async def security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the ``SECURITY_HEADERS`` a response does not set itself.

    Works on the raw header list: one pass to see what is there, then appends, where
    ``MutableScopeHeaders.get`` would scan the list once per header."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        present = {bytes(name).lower() for name, _ in headers}
        headers += [h for h in _RAW_SECURITY_HEADERS if h[0] not in present]
        message["headers"] = headers


class SecurityCollector(Collector):
    """What the guards refused, for the operators' dashboards: a scrape flood shows up as
    ``streammetrics_http_rate_limited_total``, a misconfigured client or a guesser as
    ``streammetrics_http_auth_refused_total`` (by reason, never by token)."""

    def __init__(self, limits: RateLimits | None, auth: AuthCounts | None) -> None:
        self.limits = limits
        self.auth = auth

    def collect(self) -> Iterable[Metric]:
        out: list[Metric] = []
        if self.limits is not None:
            limited = CounterMetricFamily(
                "streammetrics_http_rate_limited",
                "Requests refused with 429, by limit (health: /health's own bucket)",
                labels=["limit"],
            )
            clients = GaugeMetricFamily(
                "streammetrics_http_rate_limit_clients",
                "Client addresses whose buckets are tracked",
                labels=["limit"],
            )
            for name, limiter in (("default", self.limits.default), ("health", self.limits.health)):
                st = limiter.statistics()
                limited.add_metric([name], st.limited)
                clients.add_metric([name], st.clients)
            out += (limited, clients)
        if self.auth is not None:
            refused = CounterMetricFamily(
                "streammetrics_http_auth_refused",
                "Requests refused with 401, by reason (RFC 6750)",
                labels=["reason"],
            )
            for reason, n in sorted(self.auth.refused.items()):
                refused.add_metric([reason], n)
            out.append(refused)
        return out


def hardening(
    *,
    cors: CorsSettings | None,
    rate_limit: RateLimitSettings | None,
    auth: AuthSettings | None,
    component: str,
    clock: Callable[[], float] = time.monotonic,
    service: MetricsService | None = None,
) -> dict[str, Any]:
    """``create_app`` keyword arguments (``cors``, ``middleware``) for these sections;
    with ``service``, what the guards refuse is also counted in its exposition.

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
            HEALTH_PATHS,
        )
        middleware.append(DefineMiddleware(RateLimitMiddleware, limits=limits))
    if auth is not None:
        tokens = BearerTokens.from_env(auth.bearer_tokens_env, component=component)
        open_paths = frozenset() if auth.protect_health else HEALTH_PATHS
        # The dashboard page holds no figures (its /stream does, and asks for the token):
        # a browser navigating to it cannot send an Authorization header.
        open_paths |= {DashboardPath}
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
