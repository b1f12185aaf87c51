"""The HTTP face of a MetricsEndpoint: the Litestar app, its service, the Prometheus
collector and the uvicorn runner."""

from __future__ import annotations

from .app import MetricsApp, create_app
from .prometheus import SnapshotCollector
from .responses import (
    AlertsResponse,
    ComponentsResponse,
    ErrorResponse,
    HealthResponse,
    LiveResponse,
    MetricsResponse,
    ReadyResponse,
    RootResponse,
)
from .routes import Service
from .server import bind_socket, serve
from .service import MetricsService, ServiceStatistics

__all__ = (
    "AlertsResponse",
    "ComponentsResponse",
    "ErrorResponse",
    "HealthResponse",
    "LiveResponse",
    "MetricsApp",
    "MetricsResponse",
    "MetricsService",
    "ReadyResponse",
    "RootResponse",
    "Service",
    "ServiceStatistics",
    "SnapshotCollector",
    "bind_socket",
    "create_app",
    "serve",
)


def __dir__() -> tuple[str, ...]:
    return __all__
