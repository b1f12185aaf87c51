"""The ``cors``, ``rate_limit`` and ``auth`` sections of a MetricsEndpoint's config.

Plain structs, checked when a blueprint is read; ``hardening()`` turns them into the
app's middleware. CORS and auth are off by default (a loopback endpoint scraped by a
local Prometheus needs neither). The rate limit is on in every MetricsEndpoint
(``RateLimitSettings()``: 1000 requests a second per client address, the health routes
ten times that), a figure no scraper, dashboard or load balancer comes near but a
runaway client loop does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

from ..model.types import EnvName, parse_duration

__all__ = (
    "AuthSettings",
    "CorsSettings",
    "Duration",
    "ProxyAddress",
    "RateLimitSettings",
    "check_trusted_proxies",
)

#: Seconds as a number, or a string such as ``"1s"``, ``"500ms"``, ``"2m"``, ``"1h"``.
Duration = Annotated[float, msgspec.Meta(gt=0, le=86_400)] | str
Method = Literal["GET", "HEAD", "POST", "OPTIONS"]
ProxyAddress = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
"""An IP address (``10.0.0.5``, ``::1``) or network (``10.0.0.0/8``) of a reverse proxy."""


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


def check_trusted_proxies(proxies: Sequence[str]) -> None:
    """Raise ``ValueError`` unless each entry is an IP address or a network (host bits
    zero: ``10.0.0.0/8``, not ``10.0.0.1/8``), read exactly as the server reads it; a
    name or a ``*`` would be matched literally or trust everyone, never what was meant."""
    for i, value in enumerate(proxies):
        try:
            if "/" in value:
                ipaddress.ip_network(value)
            else:
                ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(
                f"trusted_proxies[{i}] {value[:100]!r} is not an IP address or network "
                f"({exc}); list each proxy's address, or its network as 10.0.0.0/8 "
                "(0.0.0.0/0 and ::/0 trust every peer)"
            ) from None
