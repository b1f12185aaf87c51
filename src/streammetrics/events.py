"""The wire model: what components and external producers report.

An ``Event`` is one thing that happened (or, with ``count``, several of the same
kind); a ``Delta`` is what a probe pre-counted between two flushes. Both fold into the
same windows. Decoding a batch never fails as a whole: each malformed event is
returned as a ``Rejection`` naming its index and field, and the rest still fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgspec

from .errors import EventError

__all__ = (
    "KINDS",
    "Decoded",
    "Delta",
    "Event",
    "EventBatch",
    "EventKind",
    "Format",
    "Rejection",
    "decode_events",
    "encode_events",
)

EventKind = Literal[
    "processed",
    "error",
    "started",
    "stopped",
    "heartbeat",
    "breaker",
    "span_start",
    "span_end",
]
KINDS: Final[tuple[str, ...]] = EventKind.__args__  # type: ignore[attr-defined]
Format = Literal["json", "msgpack"]

#: Longest accepted name (component, stream, ids): longer ones would blow up label storage.
MAX_NAME: Final = 200
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Seconds = Annotated[float, msgspec.Meta(ge=0.0, le=86_400.0)]


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One report from a component."""

    component: Name
    """The reporting component; registered on its first event."""
    kind: EventKind
    """What happened."""
    timestamp: float | None = None
    """Unix seconds when it happened; arrival time when omitted (windows use arrival)."""
    count: Count = 1
    """How many of the same (a processed event with count=100 is 100 items)."""
    latency: Seconds | None = None
    """Seconds the item (or span) took."""
    stream: Name | None = None
    """The stream (binding) the item travelled on; counts as a stream message."""
    detail: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    """Free text: the error message, or the new state of a ``breaker`` event."""
    bytes: Count = 0
    """Payload size, for byte throughput."""
    id: Name | None = None
    """Producer-chosen id; a repeated id inside the dedup window is folded once."""
    trace_id: Name | None = None
    """Trace of a span event."""
    span_id: Name | None = None
    """Span of a span event: a ``span_end`` closes the ``span_start`` with the same id."""


class EventBatch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Several events sent together."""

    events: list[Event]


class Delta(msgspec.Struct, gc=False):
    """What one probe counted between two flushes: plain ints and a bucket histogram."""

    component: str
    processed: int = 0
    errors: int = 0
    messages: int = 0
    bytes: int = 0
    latency_counts: list[int] | None = None
    """Per-bucket counts over ``windows.LATENCY_BOUNDS`` (+Inf last), or None."""
    latency_sum: float = 0.0
    stream: str | None = None
    last_error: str | None = None


class Rejection(msgspec.Struct, frozen=True):
    """One event that could not be folded, and why."""

    index: int
    path: str
    reason: str

    def error(self) -> EventError:
        return EventError(self.reason, path=self.path)


class Decoded(msgspec.Struct):
    """The outcome of decoding a body: the events that are good, and the rejections."""

    events: list[Event]
    rejected: list[Rejection]


_json_list = msgspec.json.Decoder(list[Event])
_json_raws = msgspec.json.Decoder(list[msgspec.Raw])
_json_one = msgspec.json.Decoder(Event)
_json_obj = msgspec.json.Decoder(dict[str, msgspec.Raw])
_mp_list = msgspec.msgpack.Decoder(list[Event])
_mp_raws = msgspec.msgpack.Decoder(list[msgspec.Raw])
_mp_one = msgspec.msgpack.Decoder(Event)
_mp_obj = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_json_enc = msgspec.json.Encoder()
_mp_enc = msgspec.msgpack.Encoder()


# msgspec raises UnicodeDecodeError (not DecodeError) for a string that is not UTF-8.
_Bad = (msgspec.DecodeError, UnicodeDecodeError)


def _located(exc: msgspec.DecodeError | UnicodeDecodeError, prefix: str) -> tuple[str, str]:
    """Split msgspec's "Expected `int`, got `str` - at `$.count`" into (path, reason)."""
    if isinstance(exc, UnicodeDecodeError):
        return prefix, f"a string is not valid UTF-8 ({exc.reason})"
    text = str(exc)
    reason, sep, where = text.rpartition(" - at `")
    if not sep:
        return prefix, text
    return prefix + where.rstrip("`")[1:], reason


def _is_array(data: bytes, fmt: Format) -> bool:
    if fmt == "json":
        head = data.lstrip()[:1]
        return head == b"["
    if not data:
        return False
    b = data[0]
    return 0x90 <= b <= 0x9F or b in (0xDC, 0xDD)


def decode_events(data: bytes, fmt: Format = "json") -> Decoded:
    """Decode one event, a list of events or ``{"events": [...]}``.

    Raises ``EventError`` only when the body as a whole is unreadable (not JSON or
    MessagePack, or neither an event, a list nor a batch); a bad event inside a list is a
    ``Rejection`` and its neighbours still decode.
    """
    one, lst, raws, obj = (
        (_json_one, _json_list, _json_raws, _json_obj)
        if fmt == "json"
        else (_mp_one, _mp_list, _mp_raws, _mp_obj)
    )
    if _is_array(data, fmt):
        return _decode_list(data, lst, raws, one, "events")
    try:
        fields = obj.decode(data)
    except _Bad as exc:
        path, reason = _located(exc, "$")
        raise EventError(f"body is not a {fmt} event, list or batch: {reason}", path=path) from None
    if "events" in fields and "component" not in fields:
        extra = sorted(set(fields) - {"events"})
        if extra:
            raise EventError(f"unknown field {extra[0]!r} in batch", path=f"$.{extra[0]}")
        return _decode_list(bytes(fields["events"]), lst, raws, one, "events")
    try:
        return Decoded([one.decode(data)], [])
    except _Bad as exc:
        path, reason = _located(exc, "event")
        return Decoded([], [Rejection(0, path, reason)])


def _decode_list(
    data: bytes,
    lst: msgspec.json.Decoder[list[Event]] | msgspec.msgpack.Decoder[list[Event]],
    raws: msgspec.json.Decoder[list[msgspec.Raw]] | msgspec.msgpack.Decoder[list[msgspec.Raw]],
    one: msgspec.json.Decoder[Event] | msgspec.msgpack.Decoder[Event],
    name: str,
) -> Decoded:
    try:
        return Decoded(lst.decode(data), [])
    except (msgspec.ValidationError, UnicodeDecodeError):
        pass  # some event is bad (or the list is not a list): decode one by one below
    except msgspec.DecodeError as exc:
        path, reason = _located(exc, name)
        raise EventError(f"body is not a valid event list: {reason}", path=path) from None
    try:
        items = raws.decode(data)
    except _Bad as exc:  # {"events": 5}, or a syntax error after the first bad event
        path, reason = _located(exc, name)
        raise EventError(f"body is not a valid event list: {reason}", path=path) from None
    good: list[Event] = []
    bad: list[Rejection] = []
    for i, raw in enumerate(items):
        try:
            good.append(one.decode(raw))
        except _Bad as exc:
            path, reason = _located(exc, f"{name}[{i}]")
            bad.append(Rejection(i, path, reason))
    return Decoded(good, bad)


def encode_events(events: Sequence[Event], fmt: Format = "json") -> bytes:
    """Encode a list of events (the form ``decode_events`` reads fastest)."""
    return _json_enc.encode(events) if fmt == "json" else _mp_enc.encode(events)
