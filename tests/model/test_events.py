"""The wire model: decoding single events, lists and batches in JSON and MessagePack,
rejections that name ``events[i].field``, and whole-body errors that stay ``EventError``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from streammetrics.errors import EventError, StreamMetricsError
from streammetrics.model.events import (
    KINDS,
    Decoded,
    Event,
    EventBatch,
    Format,
    Rejection,
    decode_events,
    encode_events,
)
from streammetrics.model.nesting import MAX_DEPTH

FORMATS: tuple[Format, ...] = ("json", "msgpack")


def _enc(obj: Any, fmt: Format) -> bytes:
    return json.dumps(obj).encode() if fmt == "json" else msgspec.msgpack.encode(obj)


GOOD = {"component": "api", "kind": "processed", "count": 3, "latency": 0.25, "stream": "in"}


def test_kinds_are_the_documented_ones() -> None:
    assert set(KINDS) == {
        "processed",
        "error",
        "started",
        "stopped",
        "heartbeat",
        "breaker",
        "span_start",
        "span_end",
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_single_event(fmt: Format) -> None:
    out = decode_events(_enc(GOOD, fmt), fmt)
    assert out == Decoded([Event("api", "processed", count=3, latency=0.25, stream="in")], [])
    ev = out.events[0]
    assert (ev.timestamp, ev.bytes, ev.detail) == (None, 0, None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_defaults(fmt: Format) -> None:
    (ev,) = decode_events(_enc({"component": "c", "kind": "heartbeat"}, fmt), fmt).events
    assert ev == Event("c", "heartbeat")
    assert ev.count == 1


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrap", [False, True])
def test_decode_list_and_batch(fmt: Format, wrap: bool) -> None:
    evs = [
        {"component": "a", "kind": "processed"},
        {"component": "b", "kind": "error", "detail": "boom", "timestamp": 1700000000.5},
        {"component": "c", "kind": "span_start", "trace_id": "t1", "span_id": "s1"},
    ]
    body = _enc({"events": evs} if wrap else evs, fmt)
    out = decode_events(body, fmt)
    assert out.rejected == []
    assert [e.component for e in out.events] == ["a", "b", "c"]
    assert out.events[1].detail == "boom"
    assert out.events[1].timestamp == 1700000000.5
    assert out.events[2].span_id == "s1"


def test_json_list_with_leading_whitespace_and_empty_list() -> None:
    assert decode_events(b"  \n [ ]") == Decoded([], [])
    assert decode_events(b'{"events": []}') == Decoded([], [])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrap", [False, True])
def test_malformed_event_in_list_is_a_rejection_naming_index_and_field(
    fmt: Format, wrap: bool
) -> None:
    evs: list[dict[str, Any]] = [
        {"component": "a", "kind": "processed"},
        {"component": "b", "kind": "processed", "latency": "slow"},
        {"component": "c", "kind": "processed"},
        {"component": "d", "kind": "exploded"},
        {"component": "e", "kind": "processed", "count": -4},
    ]
    out = decode_events(_enc({"events": evs} if wrap else evs, fmt), fmt)
    assert [e.component for e in out.events] == ["a", "c"]
    assert [(r.index, r.path) for r in out.rejected] == [
        (1, "events[1].latency"),
        (3, "events[3].kind"),
        (4, "events[4].count"),
    ]
    assert "float" in out.rejected[0].reason
    assert "exploded" in out.rejected[1].reason
    assert ">= 0" in out.rejected[2].reason


def test_rejection_error_is_an_event_error_with_the_path() -> None:
    r = Rejection(2, "events[2].count", "Expected `int` >= 0")
    err = r.error()
    assert isinstance(err, EventError)
    assert isinstance(err, StreamMetricsError)
    assert err.path == "events[2].count"
    assert "events[2].count" in str(err)
    assert "Expected `int` >= 0" in str(err)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_field_is_rejected(fmt: Format) -> None:
    out = decode_events(_enc([GOOD, {**GOOD, "lateny": 0.1}], fmt), fmt)
    assert len(out.events) == 1
    (r,) = out.rejected
    assert (r.index, r.path) == (1, "events[1]")
    assert "lateny" in r.reason
    # a single event, too
    out = decode_events(_enc({**GOOD, "lateny": 0.1}, fmt), fmt)
    assert out.events == []
    assert "lateny" in out.rejected[0].reason


def test_unknown_field_beside_events_is_an_error() -> None:
    with pytest.raises(EventError) as ei:
        decode_events(b'{"events": [], "extra": 1}')
    assert ei.value.path == "$.extra"
    assert "extra" in str(ei.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_over_long_component_name_is_rejected(fmt: Format) -> None:
    ok = {"component": "x" * 200, "kind": "processed"}
    long = {"component": "x" * 201, "kind": "processed"}
    out = decode_events(_enc([ok, long], fmt), fmt)
    assert [len(e.component) for e in out.events] == [200]
    (r,) = out.rejected
    assert r.path == "events[1].component"
    assert "200" in r.reason
    out = decode_events(_enc({"component": "", "kind": "processed"}, fmt), fmt)
    assert out.rejected[0].path == "event.component"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("field", "value"),
    [("count", -1), ("bytes", -1), ("latency", -0.5), ("latency", 86_401.0)],
)
def test_out_of_range_numbers_are_rejected(fmt: Format, field: str, value: float) -> None:
    out = decode_events(_enc([GOOD, {**GOOD, field: value}], fmt), fmt)
    assert len(out.events) == 1
    assert [r.path for r in out.rejected] == [f"events[1].{field}"]


def test_single_event_missing_field_is_a_rejection_not_an_error() -> None:
    out = decode_events(b'{"kind": "processed"}')
    assert out.events == []
    (r,) = out.rejected
    assert (r.index, r.path) == (0, "event")
    assert "component" in r.reason


@pytest.mark.parametrize(
    ("body", "fmt", "path"),
    [
        (b"not json at all", "json", "$"),
        (b"", "json", "$"),
        (b'"just a string"', "json", "$"),
        (b"42", "json", "$"),
        (b"\xff\xfe\x00garbage", "json", "$"),
        (b'{"\xff": 1}', "json", "$"),  # a key that is not UTF-8
        (b'{"events": 5}', "json", "events"),
        (b'{"events": [1, }', "json", "$"),
        (b"[1, }", "json", "events"),  # first item bad, then a syntax error
        (b'[{"component": "a", "kind": "processed"}] trailing', "json", "events"),
        (b"\xc1\xc1", "msgpack", "$"),
        (b"", "msgpack", "$"),
        (b"\x92\x01", "msgpack", "events"),  # array of 2, truncated
        (b"\x81\xa6events\x05", "msgpack", "events"),  # {"events": 5}
        (b"\xa3abc", "msgpack", "$"),  # a string, not an event
    ],
)
def test_garbage_bodies_raise_event_error_with_a_path(body: bytes, fmt: Format, path: str) -> None:
    with pytest.raises(EventError) as ei:
        decode_events(body, fmt)
    assert ei.value.path == path
    assert f"at `{path}`" in str(ei.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_utf8_string_inside_an_event_is_a_rejection(fmt: Format) -> None:
    bad_name = b"\xff\xfe"
    if fmt == "json":
        body = (
            b'[{"component":"ok","kind":"processed"},{"component":"'
            + bad_name
            + b'","kind":"processed"}]'
        )
    else:
        good = msgspec.msgpack.encode({"component": "ok", "kind": "processed"})
        bad = (
            b"\x82\xa9component\xa2" + bad_name + b"\xa4kind" + msgspec.msgpack.encode("processed")
        )
        body = b"\x92" + good + bad
    out = decode_events(body, fmt)
    assert [e.component for e in out.events] == ["ok"]
    (r,) = out.rejected
    assert (r.index, r.path) == (1, "events[1]")
    assert "UTF-8" in r.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_utf8_events_in_a_batch_are_rejected_alone(fmt: Format) -> None:
    """Whatever the typed decoder raises for a bad string, the batch is split and only the
    bad events are rejected (msgspec 0.23 raises DecodeError where it raised
    UnicodeDecodeError)."""
    good = _enc(GOOD, fmt)
    if fmt == "json":
        bad = b'{"component": "ok", "kind": "processed", "detail": "\xc3\x28"}'
        body = b'{"events": [' + bad + b", " + good + b", " + bad + b"]}"
    else:
        bad = b"\x83\xa9component\xa2ok\xa4kind\xa9processed\xa6detail\xa2\xc3\x28"
        body = b"\x81\xa6events\x93" + bad + good + bad
    out = decode_events(body, fmt)
    assert [e.component for e in out.events] == ["api"]
    assert [(r.index, r.path) for r in out.rejected] == [(0, "events[0]"), (2, "events[2]")]
    assert all("UTF-8" in r.reason for r in out.rejected)


def _deep(levels: int, fmt: Format) -> bytes:
    """A value that is ``levels`` arrays deep (the innermost one empty)."""
    if fmt == "json":
        return b"[" * levels + b"]" * levels
    return b"\x91" * (levels - 1) + b"\x90"


def _shaped(shape: str, deep: bytes, fmt: Format) -> bytes:
    """A body of ``shape`` with ``deep`` in it: ``list`` [good, deep], ``batch``
    {"events": [good, deep]}, ``field`` an event whose detail is ``deep``, ``unknown``
    an event with ``deep`` under a field it does not have."""
    good = _enc({"component": "ok", "kind": "processed"}, fmt)
    if fmt == "json":
        items = b"[" + good + b", " + deep + b"]"
        return {
            "list": items,
            "batch": b'{"events": ' + items + b"}",
            "field": b'{"component": "a", "kind": "processed", "detail": ' + deep + b"}",
            "unknown": b'{"component": "a", "kind": "processed", "x": ' + deep + b"}",
        }[shape]
    items = b"\x92" + good + deep
    head = b"\x83\xa9component\xa1a\xa4kind\xa9processed"
    return {
        "list": items,
        "batch": b"\x81\xa6events" + items,
        "field": head + b"\xa6detail" + deep,
        "unknown": head + b"\xa1x" + deep,
    }[shape]


SHAPES = ("list", "batch", "field", "unknown")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 100_000])
def test_a_body_nested_deeper_than_max_depth_is_an_event_error(
    fmt: Format, shape: str, levels: int
) -> None:
    """However deep (100,000 levels would exhaust the interpreter's recursion limit in
    the decoder), the body is refused whole, naming the limit; nothing else escapes."""
    outer = {"list": 1, "batch": 2, "field": 1, "unknown": 1}[shape]
    body = _shaped(shape, _deep(levels - outer, fmt), fmt)
    with pytest.raises(EventError) as ei:
        decode_events(body, fmt)
    assert ei.value.path == "$"
    assert f"nested more than {MAX_DEPTH} levels deep" in ei.value.reason


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", ["list", "batch"])
def test_a_deep_event_within_max_depth_is_rejected_alone(fmt: Format, shape: str) -> None:
    outer = 1 if shape == "list" else 2
    out = decode_events(_shaped(shape, _deep(MAX_DEPTH - outer, fmt), fmt), fmt)
    assert [e.component for e in out.events] == ["ok"]
    (r,) = out.rejected
    assert (r.index, r.path) == (1, "events[1]")
    assert "Expected `object`, got `array`" in r.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_deep_field_within_max_depth_is_a_rejection(fmt: Format) -> None:
    out = decode_events(_shaped("field", _deep(MAX_DEPTH - 1, fmt), fmt), fmt)
    assert out.events == []
    (r,) = out.rejected
    assert (r.index, r.path) == (0, "event.detail")


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt: Format) -> None:
    evs = [
        Event(
            "api",
            "processed",
            timestamp=1_700_000_000.5,
            count=10,
            latency=0.01,
            stream="s",
            bytes=99,
        ),
        Event("db", "error", detail="timeout", id="e-1"),
        Event("brk", "breaker", detail="open"),
        Event("t", "span_end", trace_id="tr", span_id="sp", latency=2.0),
    ]
    body = encode_events(evs, fmt)
    assert decode_events(body, fmt) == Decoded(evs, [])
    # omit_defaults: unset fields are not on the wire
    if fmt == "json":
        assert json.loads(body)[1] == {
            "component": "db",
            "kind": "error",
            "detail": "timeout",
            "id": "e-1",
        }


def test_event_batch_struct_forbids_unknown_fields() -> None:
    assert msgspec.json.decode(b'{"events": []}', type=EventBatch) == EventBatch([])
    with pytest.raises(msgspec.ValidationError, match="extra"):
        msgspec.json.decode(b'{"events": [], "extra": 1}', type=EventBatch)


# -- numbers that are no numbers, and times that are no times ---------------------------------

RANGE = "Unix seconds from 946684800 (2000-01-01) to 7258118400 (2200-01-01)"


def _event_body(fmt: Format, **fields: Any) -> bytes:
    """A list of a good event, then one with ``fields``, then a good one."""
    good = {"component": "api", "kind": "processed"}
    body = [good, {**good, **fields}, good]
    return msgspec.json.encode(body) if fmt == "json" else msgspec.msgpack.encode(body)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (float("nan"), f"timestamp is NaN; it must be {RANGE}"),
        (float("inf"), f"timestamp is infinite; it must be {RANGE}"),
        (float("-inf"), f"timestamp is infinite; it must be {RANGE}"),
        (1.5, f"timestamp 1.5 is out of range; it must be {RANGE}"),
        (1_700_000_000_000, f"timestamp 1700000000000.0 is out of range; it must be {RANGE}"),
        (946_684_799.9, "timestamp 946684799.9 is out of range"),
        (7_258_118_400.5, "timestamp 7258118400.5 is out of range"),
        (-1e300, "timestamp -1e+300 is out of range"),
    ],
)
def test_nan_infinite_and_absurd_timestamps_are_rejected_naming_the_field(
    value: float, said: str
) -> None:
    # JSON has no NaN or infinity: MessagePack carries them as they are.
    out = decode_events(_event_body("msgpack", timestamp=value), "msgpack")
    assert [e.component for e in out.events] == ["api", "api"]
    (r,) = out.rejected
    assert (r.index, r.path) == (1, "events[1].timestamp")
    assert r.reason.startswith(said) and r.reason.endswith(RANGE)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", [946_684_800, 1_700_000_000.25, 7_258_118_400.0])
def test_timestamps_within_the_range_are_kept(fmt: Format, value: float) -> None:
    out = decode_events(_event_body(fmt, timestamp=value), fmt)
    assert out.rejected == []
    assert out.events[1].timestamp == value


def test_a_json_timestamp_too_large_for_a_float_is_rejected_naming_the_field() -> None:
    body = b'[{"component": "a", "kind": "processed", "timestamp": 1e999}]'
    (r,) = decode_events(body, "json").rejected
    assert r.path == "events[0].timestamp"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (float("nan"), "latency is NaN; it must be seconds from 0 to 86400"),
        (float("inf"), "latency is infinite; it must be seconds from 0 to 86400"),
        (-0.5, "Expected `float` >= 0.0"),
        (86_401.0, "Expected `float` <= 86400.0"),
    ],
)
def test_a_nan_latency_is_rejected_for_being_nan(value: float, said: str) -> None:
    out = decode_events(_event_body("msgpack", latency=value), "msgpack")
    (r,) = out.rejected
    assert (r.index, r.path, r.reason) == (1, "events[1].latency", said)
    assert len(out.events) == 2


def test_a_single_event_with_a_nan_latency_is_named_too() -> None:
    body = msgspec.msgpack.encode({"component": "a", "kind": "processed", "latency": float("nan")})
    (r,) = decode_events(body, "msgpack").rejected
    assert (r.path, r.reason) == (
        "event.latency",
        "latency is NaN; it must be seconds from 0 to 86400",
    )
