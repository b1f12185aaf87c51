"""streammetrics: an observability endpoint for Python stream systems.

Components report events; a ``MetricsEndpoint`` folds them into rolling windows and
serves health, Prometheus and JSON views over HTTP.
"""

from __future__ import annotations

from .aggregator import Aggregator, ProcessStats
from .bus import EventBus
from .errors import (
    BlueprintError,
    EventError,
    HarnessUnavailableError,
    PortInUseError,
    StreamMetricsError,
)
from .events import Delta, Event, EventBatch, decode_events, encode_events
from .health import HealthConfig
from .probe import Probe
from .snapshot import Snapshot
from .windows import RollingWindow, WindowStats

__version__ = "1.0.0"

__all__ = (
    "Aggregator",
    "BlueprintError",
    "Delta",
    "Event",
    "EventBatch",
    "EventBus",
    "EventError",
    "HarnessUnavailableError",
    "HealthConfig",
    "PortInUseError",
    "Probe",
    "ProcessStats",
    "RollingWindow",
    "Snapshot",
    "StreamMetricsError",
    "WindowStats",
    "__version__",
    "decode_events",
    "encode_events",
)
