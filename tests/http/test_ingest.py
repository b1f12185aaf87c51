"""``POST /events`` on a real MetricsEndpoint server: formats, answers, limits, errors."""

from __future__ import annotations

import logging

import anyio
import msgspec
import pytest

from streammetrics import Event
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.model.events import encode_events
from streammetrics.model.nesting import MAX_DEPTH
from streammetrics.transports.http_client import AsyncEventClient
from tests.support.endpoints import serving as endpoint
from tests.support.exposition import by_label, families

pytestmark = pytest.mark.anyio

MSGPACK = {"content-type": "application/msgpack"}
JSON = {"content-type": "application/json"}
JSON_LD = "application/ld+json; charset=utf-8"


def _processed(ep: MetricsEndpoint) -> dict[str, int]:
    snap = ep.aggregator.figures()
    return {k: c.items_processed for k, c in snap.detailed_components.items() if k != "metrics"}


async def test_one_event_a_list_and_a_batch_in_json_and_msgpack() -> None:
    one = {"component": "api", "kind": "processed", "count": 2, "latency": 0.01}
    async with endpoint() as (ep, client):
        r = await client.post("/events", json=one)
        assert r.status_code == 200
        assert r.json() == {
            "accepted": 1,
            "rejected": 0,
            "duplicates": 0,
            "rejections": [],
            "malformed": 0,
        }
        r = await client.post("/events", json=[one, {**one, "component": "store"}])
        assert r.json()["accepted"] == 2
        r = await client.post("/events", json={"events": [one]})
        assert r.json()["accepted"] == 1
        evs = [Event("store", "processed", latency=0.002) for _ in range(1000)]
        r = await client.post("/events", content=encode_events(evs, "msgpack"), headers=MSGPACK)
        assert r.status_code == 200 and r.json()["accepted"] == 1000
        batch = msgspec.msgpack.encode({"events": [one]})
        r = await client.post(
            "/events", content=batch, headers={"content-type": "application/x-msgpack"}
        )
        assert r.json()["accepted"] == 1
        # any application/*+json is JSON
        r = await client.post(
            "/events", content=msgspec.json.encode(one), headers={"content-type": JSON_LD}
        )
        assert r.json()["accepted"] == 1
        assert _processed(ep) == {"api": 2 * 5, "store": 2 + 1000}
        snap = ep.aggregator.figures()
        assert snap.detailed_components["store"].latency.count == 1000 + 1


async def test_bad_events_are_named_by_index_and_field_while_the_rest_fold() -> None:
    body = [
        {"component": "api", "kind": "processed"},
        {"component": "api", "kind": "processed", "latency": "slow"},
        {"component": "api", "kind": "exploded"},
        {"component": "api", "kind": "breaker", "detail": "ajar"},
        {"component": "api", "kind": "processed", "count": 5},
    ]
    async with endpoint() as (ep, client):
        r = await client.post("/events", json=body)
        assert r.status_code == 200
        got = r.json()
        assert (got["accepted"], got["rejected"], got["malformed"]) == (2, 3, 3)
        assert [(x["index"], x["path"]) for x in got["rejections"]] == [
            (1, "events[1].latency"),
            (2, "events[2].kind"),
            (3, "events[3].detail"),
        ]
        assert "Expected `float | null`, got `str`" in got["rejections"][0]["reason"]
        assert _processed(ep) == {"api": 6}
        assert ep.aggregator.statistics().rejected == {"malformed": 3}


async def test_malformed_bodies_answer_400_naming_the_place() -> None:
    async with endpoint() as (_ep, client):
        r = await client.post("/events", content=b'{"component": "a", "kind": ', headers=JSON)
        assert r.status_code == 400
        assert r.json()["error"] == "malformed body"
        assert r.json()["path"] == "$"
        r = await client.post("/events", json={"events": [{"component": "a"}], "extra": 1})
        assert r.status_code == 400
        assert r.json()["path"] == "$.extra"
        r = await client.post("/events", content=b"\xc1", headers=MSGPACK)
        assert r.status_code == 400 and "msgpack" in r.json()["detail"]
        # a body whose every event is invalid is a 400 too, with each one named
        r = await client.post("/events", json={"component": "a", "kind": "processed", "count": -3})
        assert r.status_code == 400
        body = r.json()
        assert body["error"] == "no valid event"
        assert body["path"] == "event.count"
        assert "Expected `int` >= 0" in body["detail"]
        r = await client.post("/events", json=[{"component": ""}] * 5)
        assert r.status_code == 400
        assert len(r.json()["rejections"]) == 5
        assert r.json()["detail"].endswith("; and 2 more")


async def test_unsupported_type_too_large_and_disabled() -> None:
    async with endpoint(ingest={"max_body_bytes": 2048}) as (ep, client):
        r = await client.post("/events", content=b"<x/>", headers={"content-type": "text/xml"})
        assert r.status_code == 415
        assert "text/xml" in r.json()["detail"]
        big = encode_events([Event("a", "processed", detail="x" * 100)] * 50, "msgpack")
        r = await client.post("/events", content=big, headers=MSGPACK)
        assert r.status_code == 413
        assert r.json()["error"] == "request entity too large"
        assert _processed(ep) == {}
        root = (await client.get("/")).json()
        assert "/events" in root["endpoints"]
    async with endpoint(ingest={"enabled": False}) as (_ep, client):
        r = await client.post("/events", json={"component": "a", "kind": "processed"})
        assert r.status_code in (404, 405)
        assert "/events" not in (await client.get("/")).json()["endpoints"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # no header at all
        "",
        "text/plain",
        "application/x-www-form-urlencoded",  # what `curl -d` sends
        "multipart/form-data; boundary=x",
        "text/json",
        "text/plain+json",  # +json counts under application/ only
        "application/jsonl",
    ],
)
async def test_only_json_and_msgpack_content_types_are_read(content_type: str | None) -> None:
    body = msgspec.json.encode({"component": "api", "kind": "processed"})
    headers = {} if content_type is None else {"content-type": content_type}
    async with endpoint() as (ep, client):
        r = await client.post("/events", content=body, headers=headers)
        assert r.request.headers.get("content-type") == content_type
        assert r.status_code == 415
        got = r.json()
        assert (got["error"], got["status_code"]) == ("unsupported media type", 415)
        if content_type:
            assert f"content type {content_type!r} is not application/json" in got["detail"]
        else:
            assert got["detail"].startswith("a Content-Type header is required: application/json")
        assert "application/msgpack" in got["detail"]
        assert _processed(ep) == {}  # nothing was folded
        # the same body with a JSON type is read
        ok = await client.post("/events", content=body, headers=JSON)
        assert ok.status_code == 200 and ok.json()["accepted"] == 1


async def test_both_client_formats_send_their_content_type() -> None:
    async with endpoint() as (ep, _client):
        for fmt in ("json", "msgpack"):
            async with AsyncEventClient(ep.url, format=fmt) as sender:
                await sender.send(Event(f"via_{fmt}", "processed"))
            assert sender.statistics().accepted == 1
        assert _processed(ep) == {"via_json": 1, "via_msgpack": 1}


async def test_a_retried_batch_counts_once_and_duplicates_are_exported() -> None:
    evs = [Event("api", "processed", id=f"req-{i}") for i in range(10)]
    body = encode_events(evs, "msgpack")
    async with endpoint(tick_s=0.05) as (ep, client):
        first = (await client.post("/events", content=body, headers=MSGPACK)).json()
        again = (await client.post("/events", content=body, headers=MSGPACK)).json()
        assert (first["accepted"], first["duplicates"]) == (10, 0)
        assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 10, 0)
        assert _processed(ep) == {"api": 10}
        await anyio.sleep(0.1)  # the next tick's render
        text = (await client.get("/metrics")).text
    fams = families(text)
    rejected = by_label(fams["streammetrics_events_rejected"], "reason", "_total")
    assert rejected["duplicate"] == 10


async def test_cardinality_rejections_are_not_a_client_error() -> None:
    async with endpoint(max_components=2) as (_ep, client):  # the endpoint itself is one
        r = await client.post(
            "/events",
            json=[{"component": "a", "kind": "processed"}, {"component": "b", "kind": "processed"}],
        )
        assert r.status_code == 200
        got = r.json()
        assert (got["accepted"], got["rejected"], got["malformed"]) == (1, 1, 0)
        assert got["rejections"][0]["path"] == "events[1].component"
        assert "component limit 2" in got["rejections"][0]["reason"]


async def test_503_while_no_harness_feeds_the_endpoint() -> None:
    async with endpoint() as (ep, client):
        ep.service.set_unavailable("maintenance")
        r = await client.post("/events", json={"component": "a", "kind": "processed"})
        assert r.status_code == 503
        assert r.json()["error"] == "harness unavailable"
        assert _processed(ep) == {}


async def test_the_ingest_limit_is_its_own_not_the_apps() -> None:
    # A body over the app's 1 MiB request limit but under ingest.max_body_bytes (4 MiB).
    evs = [Event("bulk", "processed", detail="x" * 40) for _ in range(25_000)]
    body = encode_events(evs, "msgpack")
    assert 1 << 20 < len(body) < 4 << 20
    async with endpoint() as (ep, client):
        r = await client.post("/events", content=body, headers=MSGPACK)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 25_000
        assert _processed(ep) == {"bulk": 25_000}


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_deeply_nested_bodies_are_a_400_and_the_server_keeps_serving(
    fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    """100,000 levels: deep enough to exhaust the decoder's recursion, small enough for
    the body limit. Each is an ordinary 400 naming the limit, counted as malformed; no
    traceback is logged and the endpoint goes on answering."""
    if fmt == "json":
        headers, deep = {"content-type": "application/json"}, b"[" * 100_000 + b"]" * 100_000
        good = msgspec.json.encode({"component": "api", "kind": "processed"})
        bodies = [deep, b'{"events": ' + deep + b"}", b'[{"component": "a", "x": ' + deep + b"}]"]
    else:
        headers, deep = MSGPACK, b"\x91" * 100_000 + b"\xc0"
        good = msgspec.msgpack.encode({"component": "api", "kind": "processed"})
        bodies = [deep, b"\x81\xa6events" + deep, b"\x91\x82\xa9component\xa1a\xa1x" + deep]
    with caplog.at_level(logging.INFO):
        async with endpoint() as (ep, client):
            for body in bodies:
                r = await client.post("/events", content=body, headers=headers)
                assert r.status_code == 400, r.text
                got = r.json()
                assert (got["error"], got["path"]) == ("malformed body", "$")
                assert f"nested more than {MAX_DEPTH} levels deep" in got["detail"]
                assert (await client.get("/health")).status_code == 200
            r = await client.post("/events", content=good, headers=headers)
            assert r.json()["accepted"] == 1
            assert ep.aggregator.statistics().rejected == {"malformed": len(bodies)}
            assert _processed(ep) == {"api": 1}
    assert [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_an_event_with_a_non_utf8_string_is_rejected_alone(fmt: str) -> None:
    if fmt == "json":
        headers = {"content-type": "application/json"}
        good = msgspec.json.encode({"component": "api", "kind": "processed"})
        body = b"[" + good + b', {"component": "\xff\xfe", "kind": "processed"}, ' + good + b"]"
    else:
        headers = MSGPACK
        good = msgspec.msgpack.encode({"component": "api", "kind": "processed"})
        bad = b"\x82\xa9component\xa2\xff\xfe\xa4kind\xa9processed"
        body = b"\x93" + good + bad + good
    async with endpoint() as (ep, client):
        r = await client.post("/events", content=body, headers=headers)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["accepted"], got["rejected"], got["malformed"]) == (2, 1, 1)
        (rejection,) = got["rejections"]
        assert (rejection["index"], rejection["path"]) == (1, "events[1]")
        assert "UTF-8" in rejection["reason"]
        assert _processed(ep) == {"api": 2}
