"""Configuration of the intake (``MetricsEndpoint`` config ``ingest`` and ``dedup``).

Kept apart from the intake itself so that validating a blueprint builds only these
structs, and so that both the HTTP route and the dedup window read their settings from
one place.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from ..model.types import EnvName, RoutePath

__all__ = (
    "LIFECYCLE_KINDS",
    "DedupConfig",
    "IngestAuth",
    "IngestConfig",
    "Lifecycle",
    "is_loopback_host",
    "open_ingest_problem",
)

Lifecycle: TypeAlias = Literal["accept", "refuse"]
"""What an event source does with ``started`` and ``stopped`` events from outside."""
#: The event kinds ``lifecycle: refuse`` refuses: those that say whether a component runs.
LIFECYCLE_KINDS: Final = frozenset(("started", "stopped"))


class IngestAuth(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Bearer tokens of ``POST /events`` (config ``ingest.auth``), apart from the read
    tokens of ``auth``: whoever may read the figures may not thereby write them."""

    bearer_tokens_env: EnvName = "STREAMMETRICS_INGEST_TOKENS"
    """The environment variable holding the accepted ingest tokens, separated by commas
    or spaces (at least 16 characters each). Read at startup: an unset or empty variable
    stops the start. Naming the read tokens' variable here accepts those for ingest too."""


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``POST /events`` of a MetricsEndpoint (config ``ingest``).

    Who may post: with ``auth``, a client with one of its tokens (401 otherwise); with
    ``allow_unauthenticated``, anyone who reaches the port; with neither, anyone on a
    loopback bind while the endpoint has no read ``auth``. With a read ``auth`` and no
    ``ingest.auth`` ingest is closed (403): a read token never writes. Bound beyond
    loopback with neither, the endpoint does not start.
    """

    enabled: bool = True
    """Serve ``POST /events``; false leaves the route out (404)."""
    auth: IngestAuth | None = None
    """Require a bearer token of ingest's own: ``{bearer_tokens_env:
    STREAMMETRICS_INGEST_TOKENS}``."""
    allow_unauthenticated: bool = False
    """Take events without a token even on a bind beyond loopback or beside a read
    ``auth`` (a private network where anyone who can reach the port is trusted)."""
    lifecycle: Lifecycle = "refuse"
    """``refuse`` (default): ``started`` and ``stopped`` events are rejected one by one
    (``reason="lifecycle"``) while the rest of their batch folds, so that no caller can
    mark a component stopped (a critical alert) or up; a producer's liveness shows in
    its heartbeats and activity. ``accept`` folds them like any other event."""
    path: RoutePath = "/events"
    """Route of the ingest endpoint."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    """Larger bodies are refused with 413 before they are read whole. Folding runs on
    the event loop, so this also bounds how long one request can hold it (~2 ms per
    1,000 events)."""

    def __post_init__(self) -> None:
        if self.auth is not None and self.allow_unauthenticated:
            raise ValueError(
                "ingest.allow_unauthenticated contradicts ingest.auth: "
                "either ingest needs a token or it does not"
            )


class DedupConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How long event ids are remembered (``MetricsEndpoint`` config ``dedup``)."""

    max_ids: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 1_000_000
    """Ids remembered at most; the oldest are forgotten first. 0 turns dedup off."""
    max_age_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0
    """Seconds an id is remembered; a repeat arriving later is folded again."""


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine: ``localhost``, an
    address in 127.0.0.0/8, ``::1`` (or 127.x mapped into IPv6). Any other name or
    address (``0.0.0.0``, ``::``, a hostname, an interface's address) reaches further."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def open_ingest_problem(host: str, ingest: IngestConfig, *, read_auth: bool) -> str | None:
    """Why the endpoint must not start with ``ingest`` on ``host``, or None.

    Ingest open to anyone (enabled, no ``ingest.auth``, no read ``auth`` to close it)
    on a bind beyond loopback lets whoever reaches the port mark components stopped and
    fill the component table, so it takes an explicit ``allow_unauthenticated``."""
    if (
        not ingest.enabled
        or ingest.auth is not None
        or ingest.allow_unauthenticated
        or read_auth
        or is_loopback_host(host)
    ):
        return None
    return (
        f"host {host!r} is reachable beyond this machine and POST {ingest.path} takes "
        "events from anyone: give ingest its own tokens (ingest.auth: {bearer_tokens_env: "
        "STREAMMETRICS_INGEST_TOKENS}), turn it off (ingest.enabled: false), or say that "
        "anyone who reaches the port may post (ingest.allow_unauthenticated: true)"
    )
