"""The depth checks that every decoder of outside input runs first: they agree with the
depth of the decoded value for any JSON or MessagePack document, read strings and binary
payloads as data (brackets, quotes and container bytes inside them do not count), and
take any bytes without raising."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammetrics.model.events import Event, encode_events
from streammetrics.model.nesting import MAX_DEPTH, json_too_deep, msgpack_too_deep

FAST = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Strings that look like structure: brackets, quotes, escapes, MessagePack header bytes.
tricky_text = st.text(alphabet='[]{}"\\/,:ab\u00e9\x00\x91\x80', max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | tricky_text
    | st.sampled_from(["x" * 40, "y" * 300, "z" * 70_000])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=25,
)
msgpack_values = st.recursive(
    scalars
    | st.binary(max_size=20).map(lambda b: b + b"\x91\x80\xdc")
    | st.sampled_from([b"q" * 300, b"r" * 70_000])
    | st.builds(
        msgspec.msgpack.Ext,
        st.integers(0, 127),
        st.sampled_from([b"a", b"ab" * 2, b"c" * 8, b"d" * 16, b"e" * 3, b"f" * 300]),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=25,
)


def depth(value: Any) -> int:
    """The reference: arrays and maps count, scalars are 0 deep."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def wrap(value: Any, levels: int, kinds: list[bool]) -> Any:
    """``value`` inside ``levels`` more arrays or objects (``kinds`` says which, cycling)."""
    for i in range(levels):
        value = [value] if kinds[i % len(kinds)] else {"k": value}
    return value


@FAST
@given(json_values, st.integers(0, 12), st.lists(st.booleans(), min_size=1, max_size=3))
def test_json_depth_is_the_decoded_values_depth(value: Any, extra: int, kinds: list[bool]) -> None:
    doc = wrap(value, extra, kinds)
    data = msgspec.json.encode(doc)
    d = depth(doc)
    for limit in range(d + 2):
        assert json_too_deep(data, limit) == (d > limit), (limit, d, data[:200])


@FAST
@given(msgpack_values, st.integers(0, 12), st.lists(st.booleans(), min_size=1, max_size=3))
def test_msgpack_depth_is_the_decoded_values_depth(
    value: Any, extra: int, kinds: list[bool]
) -> None:
    doc = wrap(value, extra, kinds)
    data = msgspec.msgpack.encode(doc)
    d = depth(doc)
    for limit in range(d + 2):
        assert msgpack_too_deep(data, limit) == (d > limit), (limit, d, data[:200])


@FAST
@given(st.binary(max_size=400), st.integers(0, 5))
def test_any_bytes_are_measured_without_raising(data: bytes, limit: int) -> None:
    assert json_too_deep(data, limit) in (True, False)
    assert msgpack_too_deep(data, limit) in (True, False)


@pytest.mark.parametrize(
    ("data", "deep"),
    [
        (b"[" * 100_000, True),  # never closed: the decoder would recurse all the way
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), True),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, False),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), True),
        (b'["' + b"[" * 1000 + b'"]', False),  # brackets in a string are text
        (b'["\\"' + b"[" * 1000 + b'"]', False),  # an escaped quote does not end it
        (b'["\\\\"' + b"[" * 1000, True),  # an escaped backslash does not escape the quote
        (b"[]" * 1000, False),
    ],
)
def test_json_edges(data: bytes, deep: bool) -> None:
    assert json_too_deep(data) is deep


@pytest.mark.parametrize(
    ("data", "deep"),
    [
        (b"\x91" * 100_000, True),  # a body cut short still counts what it opened
        (b"\x91" * MAX_DEPTH + b"\xc0", False),
        (b"\x91" * (MAX_DEPTH + 1) + b"\xc0", True),
        (b"\x91" * MAX_DEPTH + b"\x90", True),  # an empty array is a level too
        (b"\x81\xa1k" * (MAX_DEPTH + 1) + b"\xc0", True),
        (b"\xc4\xff" + b"\x91" * 255, False),  # bin8 of 255 container-looking bytes
        (b"\xdc\x00\x02" + b"\x91" * 100 + b"\xc1", True),  # array16; 0xc1 is no value
        (b"\xc1" + b"\x91" * 100, False),  # the decoder stops at 0xc1
    ],
)
def test_msgpack_edges(data: bytes, deep: bool) -> None:
    assert msgpack_too_deep(data) is deep


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_an_event_batch_is_three_deep(fmt: Any) -> None:
    """The limit is far above what an event body needs: a batch of events is 3 deep."""
    events = [Event("api", "processed", detail="[[[{{{"), Event("db", "error")]
    batch = msgspec.to_builtins({"events": events})
    data = msgspec.json.encode(batch) if fmt == "json" else msgspec.msgpack.encode(batch)
    check = json_too_deep if fmt == "json" else msgpack_too_deep
    assert (check(data, 2), check(data, 3)) == (True, False)
    assert not check(encode_events(events * 5000, fmt))
