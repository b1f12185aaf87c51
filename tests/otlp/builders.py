"""OTLP requests for the tests: spans of a known duration, kind and status, and the
specification's own OTLP/JSON example."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ("SPEC_EXAMPLE", "request", "span")

#: The trace example of the OTLP specification (``examples/trace.json`` of
#: opentelemetry-proto): one SERVER span of exactly one second, ids in hex.
SPEC_EXAMPLE = """
{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          {"key": "service.name", "value": {"stringValue": "my.service"}}
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": "1544712661000000000",
              "kind": 2,
              "attributes": [
                {"key": "my.span.attr", "value": {"stringValue": "some value"}}
              ]
            }
          ]
        }
      ]
    }
  ]
}
"""


def span(
    seconds: float = 0.01,
    *,
    kind: int = Span.SPAN_KIND_SERVER,
    error: bool = False,
    trace: bytes | None = None,
    name: str = "op",
) -> Span:
    start = 1_700_000_000_000_000_000
    s = Span(
        trace_id=trace if trace is not None else os.urandom(16),
        span_id=os.urandom(8),
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + round(seconds * 1e9),
    )
    if error:
        s.status.code = 2  # type: ignore[assignment]
        s.status.message = "boom"
    return s


def request(services: dict[str, list[Span]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for service, spans in services.items():
        rs = req.resource_spans.add()
        rs.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=service))
        )
        rs.scope_spans.add().spans.extend(spans)
    return req
