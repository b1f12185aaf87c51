"""Configuration of the intake (``MetricsEndpoint`` config ``ingest`` and ``dedup``).

Kept apart from the intake itself so that validating a blueprint builds only these
structs, and so that both the HTTP route and the dedup window read their settings from
one place.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..model.types import RoutePath

__all__ = ("DedupConfig", "IngestConfig")


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``POST /events`` of a MetricsEndpoint (config ``ingest``)."""

    enabled: bool = True
    """Serve ``POST /events``; false leaves the route out (404)."""
    path: RoutePath = "/events"
    """Route of the ingest endpoint."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    """Larger bodies are refused with 413 before they are read whole. Folding runs on
    the event loop, so this also bounds how long one request can hold it (~2 ms per
    1,000 events)."""


class DedupConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How long event ids are remembered (``MetricsEndpoint`` config ``dedup``)."""

    max_ids: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 1_000_000
    """Ids remembered at most; the oldest are forgotten first. 0 turns dedup off."""
    max_age_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0
    """Seconds an id is remembered; a repeat arriving later is folded again."""
