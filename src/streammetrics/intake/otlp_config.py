"""Configuration of the OTLP/HTTP trace receiver (``MetricsEndpoint`` config ``otlp``).

Apart from the receiver itself (``intake.otlp``), which needs the ``otlp`` extra's
protobuf classes: a blueprint is validated, and an endpoint built, without importing
them unless the receiver is on. Turning it on without the extra installed fails right
there, when the config is read, not at the first export.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Final, Literal

import msgspec

from ..errors import ConfigError
from ..model.types import RoutePath

__all__ = ("INSTALL_HINT", "SPAN_KINDS", "OtlpConfig", "SpanKindName")

SpanKindName = Literal["unspecified", "internal", "server", "client", "producer", "consumer"]
#: The OTLP ``Span.SpanKind`` number of each name (the enum's order).
SPAN_KINDS: Final[dict[str, int]] = {
    "unspecified": 0,
    "internal": 1,
    "server": 2,
    "client": 3,
    "producer": 4,
    "consumer": 5,
}
#: What to run when the receiver is configured but its protobuf classes are missing.
INSTALL_HINT: Final = "pip install 'streammetrics[otlp]'"
#: The module the receiver decodes with; importing it proves the extra is installed.
_PROTO_MODULE: Final = "opentelemetry.proto.collector.trace.v1.trace_service_pb2"


class OtlpConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``POST /v1/traces``: spans exported by an OpenTelemetry SDK or collector over
    OTLP/HTTP (protobuf or JSON), folded as the endpoint's other events are."""

    path: RoutePath = "/v1/traces"
    """Route of the receiver; ``/v1/traces`` is where every OTLP exporter sends by default
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``)."""
    group_by: Literal["service", "service_and_span"] = "service"
    """The component a span counts for: its resource's ``service.name``, or
    ``service.name`` and the span's name (``checkout:GET /cart``), one component per
    operation. Either way within ``max_components``."""
    item_kinds: list[SpanKindName] = msgspec.field(default_factory=lambda: ["server", "consumer"])
    """The span kinds that count as items (processed, or errors when their status is
    ``ERROR``): by default the spans where work enters a service. Spans of every kind
    count in ``traces`` and the component's ``span_latency``."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    """Larger bodies are refused with 413: before they are read when they say their size,
    and once decompression passes it for a gzip body (whose own size says nothing of
    what it unpacks to). Spans are folded on the event loop (OTLP/JSON is decoded in a
    worker thread first), so this also bounds how long one request holds it: ~1 ms per
    1,000 spans of protobuf (measured 1-3 ms on a shared 2-CPU machine)."""
    retry_after_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 5
    """``Retry-After`` of a 503 while no harness feeds the endpoint: how long an exporter
    waits before it sends the batch again."""

    def __post_init__(self) -> None:
        try:
            importlib.import_module(_PROTO_MODULE)
        except ImportError as exc:
            raise ConfigError(
                f"the OTLP receiver needs the opentelemetry-proto package ({exc}); "
                f"install it with: {INSTALL_HINT}",
                path="otlp",
            ) from None

    @property
    def item_kind_numbers(self) -> frozenset[int]:
        """``item_kinds`` as OTLP ``SpanKind`` numbers."""
        return frozenset(SPAN_KINDS[k] for k in self.item_kinds)
