"""One error tree for the whole package.

Every error names *where* the bad input sits (``components[2].config.port``,
``events[17].latency``) and keeps the bad value, so that a caller can act on it
without parsing the message. Only ``cli.py`` turns these into exit codes.
"""

from __future__ import annotations

from typing import Any

__all__ = (
    "BlueprintError",
    "ConfigError",
    "DeliveryError",
    "EventError",
    "HarnessUnavailableError",
    "PortInUseError",
    "StreamMetricsError",
    "TransportError",
)


class StreamMetricsError(Exception):
    """Base of every error streammetrics raises on purpose."""


class _LocatedError(StreamMetricsError):
    """An error about one value at one path of some input."""

    path: str
    value: Any
    reason: str

    def __init__(self, reason: str, *, path: str = "$", value: Any = None) -> None:
        self.reason = reason
        self.path = path
        self.value = value
        super().__init__(f"{reason} - at `{path}`")


class BlueprintError(_LocatedError):
    """A blueprint that cannot run: unknown type, duplicate name, bad port, bad YAML."""


class ConfigError(_LocatedError):
    """Keyword configuration given in code (``MetricsEndpoint(port=...)``) that does not
    validate; the path is that of the keyword (``config.port``)."""


class EventError(_LocatedError):
    """An event (or batch) that cannot be folded; the rest of its batch still is."""


class PortInUseError(StreamMetricsError):
    """A server could not bind its port; names the component, host and port."""

    def __init__(self, component: str, host: str, port: int, cause: str = "") -> None:
        self.component = component
        self.host = host
        self.port = port
        detail = f": {cause}" if cause else ""
        super().__init__(
            f"component {component!r} cannot listen on {host}:{port}, the port is in use{detail}"
        )


class HarnessUnavailableError(StreamMetricsError):
    """The metrics API was asked for figures while no harness feeds it."""


class TransportError(StreamMetricsError):
    """Events could not travel between processes: a Redis or HTTP peer that cannot be
    reached, or that refuses them. Names the peer (credentials left out)."""


class DeliveryError(TransportError):
    """A batch of events was not delivered after the retries; the events are kept in
    ``events`` so the caller can send them again or write them elsewhere."""

    def __init__(
        self, message: str, *, url: str, events: list[Any], status: int | None = None
    ) -> None:
        self.url = url
        self.events = events
        self.status = status
        super().__init__(message)
