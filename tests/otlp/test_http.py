"""``POST /v1/traces`` on a real MetricsEndpoint server: OTLP/JSON as the specification
writes it, protobuf, gzip, partial success, and every way a request is refused."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from streammetrics.components.metrics import MetricsEndpoint
from tests.otlp.builders import SPEC_EXAMPLE, request, span
from tests.support.exposition import by_label, families
from tests.support.guards import TOKEN

pytestmark = pytest.mark.anyio

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}


@asynccontextmanager
async def endpoint(**config: Any) -> AsyncIterator[tuple[MetricsEndpoint, httpx.AsyncClient]]:
    config.setdefault("otlp", {})
    ep = MetricsEndpoint(name="metrics", port=0, **config)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        async with httpx.AsyncClient(base_url=ep.url, timeout=5) as client:
            yield ep, client
        tg.cancel_scope.cancel()


def items(ep: MetricsEndpoint, name: str) -> tuple[int, int]:
    c = ep.aggregator.figures().detailed_components[name]
    return c.items_processed, c.errors_encountered


async def test_the_specification_s_json_example_folds_one_server_span_of_one_second() -> None:
    async with endpoint() as (ep, client):
        r = await client.post("/v1/traces", content=SPEC_EXAMPLE, headers=JSON)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {}  # every span accepted: no partial_success
        snap = ep.aggregator.figures()
        c = snap.detailed_components["my.service"]
        assert (c.items_processed, c.errors_encountered) == (1, 0)
        assert snap.latency_sums["my.service"] == pytest.approx(1.0)
        assert snap.traces.total_traces == 1 and snap.traces.completed_spans == 1


async def test_json_with_snake_case_names_enum_names_and_numbers_for_int64() -> None:
    """Protobuf's JSON mapping reads the original field names, enum names and 64-bit
    integers as numbers too; the ids stay hex."""
    body = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "0102030405060708090a0b0c0d0e0f10",
                                "span_id": "0102030405060708",
                                "name": "x",
                                "kind": "SPAN_KIND_CONSUMER",
                                "start_time_unix_nano": 1_000_000_000,
                                "end_time_unix_nano": 1_002_000_000,
                                "status": {"code": "STATUS_CODE_ERROR", "message": "nope"},
                                "someFieldFromTheFuture": 1,
                            }
                        ]
                    }
                ],
            }
        ]
    }
    async with endpoint() as (ep, client):
        r = await client.post("/v1/traces", json=body)
        assert r.status_code == 200, r.text
        assert items(ep, "svc") == (0, 1)
        assert ep.aggregator.figures().detailed_components["svc"].last_error == "nope"


async def test_protobuf_plain_and_gzip_answer_in_protobuf() -> None:
    req = request({"api": [span(), span(error=True), span(kind=Span.SPAN_KIND_CLIENT)]})
    body = req.SerializeToString()
    async with endpoint() as (ep, client):
        r = await client.post("/v1/traces", content=body, headers=PROTOBUF)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-protobuf"
        assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
        r = await client.post(
            "/v1/traces",
            content=gzip.compress(body),
            headers={**PROTOBUF, "content-encoding": "gzip"},
        )
        assert r.status_code == 200
        # the CLIENT span is no item; it is a span all the same
        assert items(ep, "api") == (2, 2)
        assert ep.aggregator.figures().traces.completed_spans == 6


async def test_a_partial_success_names_the_count_and_the_reasons() -> None:
    bad_time = span()
    bad_time.end_time_unix_nano = bad_time.start_time_unix_nano - 1
    req = request({"api": [span(), bad_time, span(trace=b"short")], "x" * 201: [span()]})
    async with endpoint(tick_s=0.05) as (ep, client):
        r = await client.post("/v1/traces", content=req.SerializeToString(), headers=PROTOBUF)
        assert r.status_code == 200
        partial = ExportTraceServiceResponse.FromString(r.content).partial_success
        assert partial.rejected_spans == 3
        assert "1 spans: end_time_unix_nano before start_time_unix_nano" in partial.error_message
        assert "1 spans: trace_id is not 16 bytes" in partial.error_message
        assert "service.name is longer than 200 characters" in partial.error_message
        assert items(ep, "api") == (1, 0)
        # the same as JSON: the partial success in lowerCamelCase, int64 as a string
        doc = json_format.MessageToDict(req)
        for rs in doc["resourceSpans"]:
            for s in rs["scopeSpans"][0]["spans"]:
                s["traceId"] = base64.b64decode(s["traceId"]).hex()  # OTLP/JSON ids are hex
                s["spanId"] = base64.b64decode(s["spanId"]).hex()
        r = await client.post("/v1/traces", content=json.dumps(doc), headers=JSON)
        assert r.status_code == 200
        assert r.json()["partialSuccess"]["rejectedSpans"] == "3"
        await anyio.sleep(0.1)
        fams = families((await client.get("/metrics")).text)
    rejected = by_label(fams["streammetrics_events_rejected"], "reason", "_total")
    assert rejected["malformed"] == 6


async def test_spans_past_the_component_limit_are_rejected_as_cardinality() -> None:
    req = request({"a": [span()], "b": [span(), span()], "c": [span()]})
    async with endpoint(max_components=2) as (ep, client):  # "metrics" itself is one
        r = await client.post("/v1/traces", content=req.SerializeToString(), headers=PROTOBUF)
        partial = ExportTraceServiceResponse.FromString(r.content).partial_success
        assert partial.rejected_spans == 3
        assert "component limit 2 reached ('b' not registered)" in partial.error_message
        assert ep.aggregator.statistics().rejected == {"cardinality": 3}
        assert items(ep, "a") == (1, 0)


async def test_item_kinds_are_configurable() -> None:
    spans = [span(kind=k) for k in (Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_SERVER)]
    async with endpoint(otlp={"item_kinds": ["internal"]}) as (ep, client):
        r = await client.post(
            "/v1/traces", content=request({"job": spans}).SerializeToString(), headers=PROTOBUF
        )
        assert r.status_code == 200
        assert items(ep, "job") == (1, 0)


def status(r: httpx.Response) -> Status:
    if r.headers["content-type"].startswith("application/json"):
        return json_format.Parse(r.text, Status())
    return Status.FromString(r.content)


@pytest.mark.parametrize(
    ("body", "headers", "says"),
    [
        (b"\xff\xff\xff", PROTOBUF, "not an OTLP protobuf"),
        (b"{not json", JSON, "not JSON"),
        (b"[1, 2]", JSON, "not a JSON object"),
        (b'{"resourceSpans": 5}', JSON, "not an OTLP/JSON"),
        (b"[" * 100 + b"]" * 100, JSON, "nested more than 64"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            JSON,
            "traceId must be hex",
        ),
        (b"not gzip", {**PROTOBUF, "content-encoding": "gzip"}, "not valid gzip"),
        (gzip.compress(b"abc")[:-4], {**JSON, "content-encoding": "gzip"}, "cut short"),
    ],
)
async def test_a_malformed_body_is_400_with_a_status_saying_why(
    body: bytes, headers: dict[str, str], says: str
) -> None:
    async with endpoint() as (ep, client):
        r = await client.post("/v1/traces", content=body, headers=headers)
        assert r.status_code == 400
        assert says in status(r).message
        assert status(r).code == 3  # INVALID_ARGUMENT
        assert ep.otlp is not None and ep.otlp.statistics().unreadable == 1
        assert ep.aggregator.statistics().rejected == {"malformed": 1}


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/msgpack"},
        {},
        {**PROTOBUF, "content-encoding": "br"},
    ],
)
async def test_another_type_or_encoding_is_415(headers: dict[str, str]) -> None:
    async with endpoint() as (_ep, client):
        r = await client.post("/v1/traces", content=b"x", headers=headers)
        assert r.status_code == 415
        assert "not supported" in status(r).message or "OTLP/HTTP is" in status(r).message


async def test_over_the_body_limit_is_413_and_so_is_a_gzip_bomb() -> None:
    limit = 64 * 1024
    async with endpoint(otlp={"max_body_bytes": limit}) as (ep, client):
        r = await client.post("/v1/traces", content=b"\0" * (limit + 1), headers=PROTOBUF)
        assert r.status_code == 413
        assert status(r).code == 8  # RESOURCE_EXHAUSTED
        bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB in ~64 KiB
        assert len(bomb) < limit
        r = await client.post(
            "/v1/traces", content=bomb, headers={**PROTOBUF, "content-encoding": "gzip"}
        )
        assert r.status_code == 413
        assert "unpacks to more than 65536 bytes" in status(r).message
        # a gzip body whose content is within the limit is fine
        small = gzip.compress(request({"api": [span()]}).SerializeToString())
        r = await client.post(
            "/v1/traces", content=small, headers={**PROTOBUF, "content-encoding": "gzip"}
        )
        assert r.status_code == 200 and items(ep, "api") == (1, 0)


async def test_unavailable_is_503_with_retry_after() -> None:
    async with endpoint(otlp={"retry_after_s": 7}) as (ep, client):
        ep.service.set_unavailable("stopped for the test")
        r = await client.post(
            "/v1/traces", content=request({"a": [span()]}).SerializeToString(), headers=PROTOBUF
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert status(r).code == 14  # UNAVAILABLE


async def test_throttled_is_429_with_retry_after() -> None:
    body = request({"a": [span()]}).SerializeToString()
    # Each on a new connection: one just answered 429 would hold its next request until the
    # Retry-After has passed (limits.rate_limited_hold_s), when a token is back.
    once = {**PROTOBUF, "connection": "close"}
    async with endpoint(rate_limit={"requests": 2, "per": "1s"}) as (_ep, client):
        codes = [(await client.post("/v1/traces", content=body, headers=once)) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 429, 429]
    assert int(codes[-1].headers["retry-after"]) >= 1


INGEST_TOKEN = "ingest-Cc0123456789-writer"


async def test_the_ingest_guard_not_the_read_tokens(
    tokens_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver writes: it takes the ingest tokens (``ingest.auth``), as ``POST
    /events`` does, and a read token does not admit it."""
    monkeypatch.setenv("STREAMMETRICS_TEST_INGEST", INGEST_TOKEN)
    body = request({"a": [span()]}).SerializeToString()
    config: dict[str, Any] = {
        "auth": {"bearer_tokens_env": tokens_env},
        "ingest": {"auth": {"bearer_tokens_env": "STREAMMETRICS_TEST_INGEST"}},
    }
    async with endpoint(**config) as (ep, client):
        assert (await client.post("/v1/traces", content=body, headers=PROTOBUF)).status_code == 401
        read = {"authorization": f"Bearer {TOKEN}"}
        r = await client.post("/v1/traces", content=body, headers={**PROTOBUF, **read})
        assert r.status_code == 401
        assert (await client.get("/metrics/json", headers=read)).status_code == 200
        write = {"authorization": f"Bearer {INGEST_TOKEN}"}
        r = await client.post("/v1/traces", content=body, headers={**PROTOBUF, **write})
        assert r.status_code == 200 and items(ep, "a") == (1, 0)
        r = await client.post(
            "/events", json={"component": "b", "kind": "processed"}, headers=write
        )
        assert r.status_code == 200


async def test_closed_with_read_auth_and_no_ingest_tokens(tokens_env: str) -> None:
    body = request({"a": [span()]}).SerializeToString()
    async with endpoint(auth={"bearer_tokens_env": tokens_env}) as (ep, client):
        read = {"authorization": f"Bearer {TOKEN}"}
        r = await client.post("/v1/traces", content=body, headers={**PROTOBUF, **read})
        assert r.status_code == 403 and "ingest.auth" in r.json()["detail"]
        assert "a" not in ep.aggregator.figures().detailed_components


async def test_off_by_default_and_listed_when_on() -> None:
    body = request({"a": [span()]}).SerializeToString()
    async with endpoint(otlp=None) as (_ep, client):
        assert (await client.post("/v1/traces", content=body, headers=PROTOBUF)).status_code in (
            404,
            405,
        )
    async with endpoint(otlp={"path": "/otlp/v1/traces"}) as (_ep, client):
        assert "/otlp/v1/traces" in (await client.get("/")).json()["endpoints"]
        r = await client.post("/otlp/v1/traces", content=body, headers=PROTOBUF)
        assert r.status_code == 200
