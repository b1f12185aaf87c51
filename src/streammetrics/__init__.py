"""streammetrics: an observability endpoint for Python stream systems.

Components report events; a ``MetricsEndpoint`` folds them into rolling windows and
serves health, Prometheus and JSON views over HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .aggregator import Aggregator
from .bus import EventBus
from .errors import (
    BlueprintError,
    ConfigError,
    EventError,
    HarnessUnavailableError,
    PortInUseError,
    StreamMetricsError,
)
from .judge.health import HealthConfig
from .model.events import Delta, Event, EventBatch, decode_events, encode_events
from .probe import Probe
from .snapshot import ProcessStats, Snapshot
from .version import __version__
from .windows import RollingWindow, WindowStats

if TYPE_CHECKING:
    from .components.metrics import MetricsEndpoint
    from .embed import ProductionMetricsEndpoint, run, run_until_interrupted, serve
    from .extend import MetricsPlugin


#: Names whose modules pull in the HTTP stack: imported on first use, so that a
#: component that only counts (``Probe``) does not load Litestar and uvicorn.
_LAZY = {
    "MetricsEndpoint": "components.metrics",
    "MetricsPlugin": "extend",
    "ProductionMetricsEndpoint": "embed",
    "run": "embed",
    "run_until_interrupted": "embed",
    "serve": "embed",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streammetrics' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = (
    "Aggregator",
    "BlueprintError",
    "ConfigError",
    "Delta",
    "Event",
    "EventBatch",
    "EventBus",
    "EventError",
    "HarnessUnavailableError",
    "HealthConfig",
    "MetricsEndpoint",
    "MetricsPlugin",
    "PortInUseError",
    "Probe",
    "ProcessStats",
    "ProductionMetricsEndpoint",
    "RollingWindow",
    "Snapshot",
    "StreamMetricsError",
    "WindowStats",
    "__version__",
    "decode_events",
    "encode_events",
    "run",
    "run_until_interrupted",
    "serve",
)
