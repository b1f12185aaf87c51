"""streammetrics: an observability endpoint for Python stream systems.

Components report events; a ``MetricsEndpoint`` folds them into rolling windows and
serves health, Prometheus and JSON views over HTTP.

What a program uses is importable from here: the endpoints and the functions that serve
them, ``Probe``, ``Event`` and the senders that carry events from other processes, the
config structs of an endpoint's sections, and the errors. Everything else is internal
and lives in the submodules. Only the errors are imported with the package; every other
name is imported on first use, so that a component that only counts (``Probe``) or only
sends (``EventClient``) does not load Litestar, uvicorn or redis.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from .errors import (
    BlueprintError,
    ConfigError,
    DeliveryError,
    EventError,
    HarnessUnavailableError,
    PortInUseError,
    StreamMetricsError,
    TransportError,
)
from .version import __version__

if TYPE_CHECKING:
    from .components.metrics import MetricsEndpoint
    from .components.production import ProductionMetricsEndpoint
    from .embedding import run_until_interrupted, serve, serve_forever
    from .http.settings import AuthSettings, CorsSettings, RateLimitSettings
    from .intake.config import DedupConfig, IngestConfig
    from .judge.alerts.rules import AlertRule
    from .judge.health import HealthConfig
    from .model.events import Event
    from .plugins import MetricsPlugin
    from .probe import Probe
    from .transports.config import EventSourceConfig, RedisSourceConfig
    from .transports.http_client import AsyncEventClient, EventClient
    from .transports.redis_publisher import AsyncEventPublisher, EventPublisher
    from .transports.retry import RetryPolicy
    from .views.live import LiveConfig

#: Each lazily imported name and the module (below this package) that defines it.
_LAZY: Final = {
    # endpoints, serving them, extending them
    "MetricsEndpoint": "components.metrics",
    "ProductionMetricsEndpoint": "components.production",
    "serve": "embedding",
    "serve_forever": "embedding",
    "run_until_interrupted": "embedding",
    "MetricsPlugin": "plugins",
    # reporting: in process, and from other processes
    "Probe": "probe",
    "Event": "model.events",
    "EventClient": "transports.http_client",
    "AsyncEventClient": "transports.http_client",
    "EventPublisher": "transports.redis_publisher",
    "AsyncEventPublisher": "transports.redis_publisher",
    "RetryPolicy": "transports.retry",
    # the sections of an endpoint's config
    "HealthConfig": "judge.health",
    "AlertRule": "judge.alerts.rules",
    "IngestConfig": "intake.config",
    "DedupConfig": "intake.config",
    "EventSourceConfig": "transports.config",
    "RedisSourceConfig": "transports.config",
    "CorsSettings": "http.settings",
    "RateLimitSettings": "http.settings",
    "AuthSettings": "http.settings",
    "LiveConfig": "views.live",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streammetrics' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = (
    "AlertRule",
    "AsyncEventClient",
    "AsyncEventPublisher",
    "AuthSettings",
    "BlueprintError",
    "ConfigError",
    "CorsSettings",
    "DedupConfig",
    "DeliveryError",
    "Event",
    "EventClient",
    "EventError",
    "EventPublisher",
    "EventSourceConfig",
    "HarnessUnavailableError",
    "HealthConfig",
    "IngestConfig",
    "LiveConfig",
    "MetricsEndpoint",
    "MetricsPlugin",
    "PortInUseError",
    "Probe",
    "ProductionMetricsEndpoint",
    "RateLimitSettings",
    "RedisSourceConfig",
    "RetryPolicy",
    "StreamMetricsError",
    "TransportError",
    "__version__",
    "run_until_interrupted",
    "serve",
    "serve_forever",
)


def __dir__() -> tuple[str, ...]:
    return __all__
