"""The JSON bodies of the metrics API.

Field names are fixed (users' scripts and dashboards parse them); fields are
added, never renamed. The snapshot's raw histogram fields are left out: they exist for
the Prometheus histogram and would triple a JSON body for nobody.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import msgspec
from litestar import Request, Response
from litestar.enums import MediaType

from ..prometheus.custom import CustomCollection, CustomFamily
from ..snapshot import (
    Alert,
    BreakerStatus,
    ComponentCounts,
    ComponentStatus,
    Deduction,
    Performance,
    Recommendation,
    Snapshot,
    Status,
    Streaming,
    Traces,
)

__all__ = (
    "AlertsResponse",
    "ComponentsResponse",
    "ErrorResponse",
    "HealthResponse",
    "LiveResponse",
    "MetricsResponse",
    "ReadyResponse",
    "RootResponse",
    "Window",
    "alerts_response",
    "components_response",
    "error_response",
    "health_response",
    "internal_error",
    "metrics_response",
)

#: The ``?window=`` values, as the routes accept them.
Window = Literal["10s", "60s", "300s"]

_log = logging.getLogger("streammetrics.http")


class ErrorResponse(msgspec.Struct, frozen=True):
    """Every error body: a short fixed ``error`` to match on, a ``detail`` for people."""

    error: str
    """Stable kind: ``invalid query parameter``, ``harness unavailable``, ``internal error``…"""
    detail: str
    """What exactly went wrong; never a traceback."""
    status_code: int
    """The HTTP status, repeated for clients that only keep the body."""


#: An error body: ``ErrorResponse`` or a route's own extension of it (``POST /events``').
E = TypeVar("E", bound=ErrorResponse)


def error_response(body: E, headers: Mapping[str, str] | None = None) -> Response[E]:
    """How an error answer is made, by the app's exception handlers, by routes that
    answer an error themselves and by an ``APIEndpoint``: the status line is the body's
    ``status_code`` (so the two never disagree), and the type is JSON whatever the
    route's own type (an HTML page's or the exposition's). The one other maker is the
    rate limit's 429 (``ratelimit._Refusal``), the same body sent straight through ASGI
    before any route runs, since under a flood most answers are refusals."""
    return Response(
        body,
        status_code=body.status_code,
        headers=dict(headers) if headers is not None else None,
        media_type=MediaType.JSON,
    )


def internal_error(request: Request[Any, Any, Any], exc: BaseException) -> Response[ErrorResponse]:
    """The 500 of an exception nobody expected: logged with its traceback, answered with
    the type name only, as its message may carry data nobody should see."""
    _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(ErrorResponse("internal error", type(exc).__name__, 500))


class RootResponse(msgspec.Struct, frozen=True):
    service: str
    version: str
    endpoints: dict[str, str]
    timestamp: float


class HealthResponse(msgspec.Struct, frozen=True):
    status: Status
    health_score: float
    uptime_seconds: float
    components: ComponentCounts
    timestamp: float
    reasons: list[Deduction]
    """Why the score is below 1.0, one entry per penalty."""


class LiveResponse(msgspec.Struct, frozen=True):
    """``GET /health/live``: the process serves requests (a liveness probe)."""

    status: Literal["alive"] = "alive"


class ReadyResponse(msgspec.Struct, frozen=True):
    """``GET /health/ready``: whether traffic should come (a readiness probe)."""

    status: Status
    """``/health``'s status: ``healthy`` with 200; ``degraded`` or ``unhealthy`` with 503."""


class MetricsResponse(msgspec.Struct, frozen=True):
    health_score: float
    uptime_seconds: float
    system_status: Status
    performance: Performance
    detailed_components: dict[str, ComponentStatus]
    circuit_breakers: dict[str, BreakerStatus]
    traces: Traces
    alerts: list[Alert]
    recommendations: list[Recommendation]
    streaming: Streaming
    components: ComponentCounts
    reasons: list[Deduction]
    rejected: dict[str, int]
    errors: list[str]
    """Collectors that failed for this snapshot; the other figures are still valid."""
    timestamp: float
    components_evicted: int = 0
    """Components evicted after ``component_ttl_s`` without a report, since start."""
    streams_evicted: int = 0
    """Streams evicted the same way, since start."""
    custom: dict[str, CustomFamily] = {}
    """Families of the endpoint's custom collectors, by name (as ``/metrics`` has them)."""
    extra: dict[str, Any] = {}
    """Figures of plugins and subclasses (``figures()``), by their name."""


class AlertsResponse(msgspec.Struct, frozen=True):
    alerts: list[Alert]
    """Alerts firing now."""
    recommendations: list[Recommendation]
    timestamp: float
    pending_alerts: list[Alert]
    """Conditions that hold but whose ``for`` duration has not elapsed yet."""
    resolved_alerts: list[Alert]
    """Alerts that fired and stopped, within the retention."""


class ComponentsResponse(msgspec.Struct, frozen=True):
    components: dict[str, ComponentStatus]
    circuit_breakers: dict[str, BreakerStatus]
    streaming: Streaming
    timestamp: float


def health_response(s: Snapshot) -> HealthResponse:
    return HealthResponse(
        status=s.system_status,
        health_score=s.health_score,
        uptime_seconds=s.uptime_seconds,
        components=s.components,
        timestamp=s.timestamp,
        reasons=s.reasons,
    )


def metrics_response(s: Snapshot, custom: CustomCollection | None = None) -> MetricsResponse:
    return MetricsResponse(
        custom=custom.json if custom is not None else {},
        extra=custom.extra if custom is not None else {},
        health_score=s.health_score,
        uptime_seconds=s.uptime_seconds,
        system_status=s.system_status,
        performance=s.performance,
        detailed_components=s.detailed_components,
        circuit_breakers=s.circuit_breakers,
        traces=s.traces,
        alerts=s.alerts,
        recommendations=s.recommendations,
        streaming=s.streaming,
        components=s.components,
        reasons=s.reasons,
        rejected=s.rejected,
        errors=s.errors,
        timestamp=s.timestamp,
        components_evicted=s.components_evicted,
        streams_evicted=s.streams_evicted,
    )


def alerts_response(s: Snapshot) -> AlertsResponse:
    return AlertsResponse(
        alerts=s.alerts,
        recommendations=s.recommendations,
        timestamp=s.timestamp,
        pending_alerts=s.pending_alerts,
        resolved_alerts=s.resolved_alerts,
    )


def components_response(s: Snapshot) -> ComponentsResponse:
    return ComponentsResponse(
        components=s.detailed_components,
        circuit_breakers=s.circuit_breakers,
        streaming=s.streaming,
        timestamp=s.timestamp,
    )
