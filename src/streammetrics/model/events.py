"""The wire model: what components and external producers report.

An ``Event`` is one thing that happened (or, with ``count``, several of the same
kind); a ``Delta`` is what a probe pre-counted between two flushes. Both fold into the
same windows. Decoding a batch never fails as a whole: each malformed event is
returned as a ``Rejection`` naming its index and field, and the rest still fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal, NamedTuple, TypeAlias, TypeVar

import msgspec

from ..errors import EventError
from .nesting import MAX_DEPTH, json_too_deep, msgpack_too_deep
from .types import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Count, Name, Seconds, Timestamp
from .validation import UNREADABLE, located

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


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One report from a component."""

    component: Name
    """The reporting component; registered on its first event."""
    kind: EventKind
    """What happened."""
    timestamp: Timestamp | None = None
    """Unix seconds when it happened, between 2000 and 2200 (``types.Timestamp``); arrival
    time when omitted (windows use arrival)."""
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
    latency_min: float | None = None
    """The smallest latency of ``latency_counts`` (None: not known), so that quantiles
    interpolate only between what was observed inside a bucket."""
    latency_max: float | None = None
    """The largest, likewise."""
    stream: str | None = None
    last_error: str | None = None
    client_errors: int = 0
    """Requests refused as the client's fault (a 4xx): apart from ``errors``, which
    are the component's own failures."""


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


_T = TypeVar("_T")
_Decoder: TypeAlias = msgspec.json.Decoder[_T] | msgspec.msgpack.Decoder[_T]


class _Decoders(NamedTuple):
    """The decoders of one format: typed ones for the fast path, ``Raw`` ones that split
    a body so that each event can be decoded (and rejected) on its own."""

    many: _Decoder[list[Event]]
    batch: _Decoder[EventBatch]
    one: _Decoder[Event]
    items: _Decoder[list[msgspec.Raw]]
    fields: _Decoder[dict[str, msgspec.Raw]]
    number: _Decoder[float]

    @classmethod
    def of(
        cls, decoder: type[msgspec.json.Decoder[Any]] | type[msgspec.msgpack.Decoder[Any]]
    ) -> _Decoders:
        """The decoders of the format whose ``Decoder`` class is ``decoder``: the same
        types for every format, so that a body decodes alike whatever its format."""
        return cls(
            decoder(list[Event]),
            decoder(EventBatch),
            decoder(Event),
            decoder(list[msgspec.Raw]),
            decoder(dict[str, msgspec.Raw]),
            decoder(float),
        )


_DECODERS: Final[dict[Format, _Decoders]] = {
    "json": _Decoders.of(msgspec.json.Decoder),
    "msgpack": _Decoders.of(msgspec.msgpack.Decoder),
}
_TOO_DEEP: Final[dict[Format, Callable[[bytes], bool]]] = {
    "json": json_too_deep,
    "msgpack": msgpack_too_deep,
}
_json_enc = msgspec.json.Encoder()
_mp_enc = msgspec.msgpack.Encoder()


def _located(exc: Exception, prefix: str) -> tuple[str, str]:
    """``(path, reason)`` of a decode failure: the two a decoder raises without a path
    (nesting past the stack, bad UTF-8 in older msgspec) said here, msgspec's own errors
    split by ``validation.located``."""
    if isinstance(exc, RecursionError):
        return prefix, f"nested too deeply to decode (the limit is {MAX_DEPTH} levels)"
    if isinstance(exc, UnicodeDecodeError):  # what msgspec before 0.23 raised for bad UTF-8
        return prefix, f"a string is not valid UTF-8 ({exc.reason})"
    return located(exc, prefix)


#: The float fields of an event, and what msgspec's bound of each means.
_FLOAT_RULES: Final = {
    "latency": "seconds from 0 to 86400",
    "timestamp": f"Unix seconds from {EARLIEST_TIMESTAMP:.0f} (2000-01-01) "
    f"to {LATEST_TIMESTAMP:.0f} (2200-01-01)",
}


def _rejection(raw: bytes, d: _Decoders, index: int, exc: Exception, prefix: str) -> Rejection:
    """The ``Rejection`` of the event ``raw`` that did not decode: where and why.

    msgspec refuses a NaN latency as ``Expected `float` >= 0.0`` (NaN fails every
    comparison) and an infinite timestamp as out of range: true but misleading, so for a
    float field the value itself is read again and a NaN or infinity is called that.
    Only rejected events pay for it; valid ones never come here.
    """
    path, reason = _located(exc, prefix)
    field = path.rpartition(".")[2]
    rule = _FLOAT_RULES.get(field)
    if rule is None or path != f"{prefix}.{field}":
        return Rejection(index, path, reason)
    try:
        value = d.number.decode(d.fields.decode(raw)[field])
    except (*UNREADABLE, KeyError):
        return Rejection(index, path, reason)
    if math.isnan(value):
        reason = f"{field} is NaN; it must be {rule}"
    elif math.isinf(value):
        reason = f"{field} is infinite; it must be {rule}"
    elif field == "timestamp":
        reason = f"timestamp {value!r} is out of range; it must be {rule}"
    return Rejection(index, path, reason)


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
    MessagePack, neither an event, a list nor a batch, or nested deeper than
    ``MAX_DEPTH``); a bad event inside a list is a ``Rejection`` and its neighbours
    still decode.

    The typed decoders come first: a body whose events are all valid decodes in one
    call. Only when that fails, for whatever reason, is the body split into its events,
    each decoded alone, so the bad ones are found and named.
    """
    d = _DECODERS[fmt]
    array = _is_array(data, fmt)
    try:
        return Decoded(d.many.decode(data) if array else d.batch.decode(data).events, [])
    except Exception:  # some event is bad, or the body is no list or batch: see below
        pass
    if not array:
        try:
            return Decoded([d.one.decode(data)], [])
        except Exception:  # found out below, with the place and the reason
            pass
    # From here on the Raw decoders skip values, recursively: depth is checked first.
    if _TOO_DEEP[fmt](data):
        raise EventError(
            f"body is nested more than {MAX_DEPTH} levels deep (an event body needs 3)"
        )
    if array:
        return _one_by_one(data, d, "events")
    try:
        fields = d.fields.decode(data)
    except UNREADABLE as exc:
        path, reason = _located(exc, "$")
        raise EventError(f"body is not a {fmt} event, list or batch: {reason}", path=path) from None
    if "events" in fields and "component" not in fields:
        extra = sorted(set(fields) - {"events"})
        if extra:
            raise EventError(f"unknown field {extra[0]!r} in batch", path=f"$.{extra[0]}")
        return _one_by_one(bytes(fields["events"]), d, "events")
    try:
        return Decoded([d.one.decode(data)], [])
    except UNREADABLE as exc:
        return Decoded([], [_rejection(data, d, 0, exc, "event")])


def _one_by_one(data: bytes, d: _Decoders, name: str) -> Decoded:
    """Split a list into its items and decode each alone: every item that is not a
    valid event is a ``Rejection``; only a body that is not a list at all is an error."""
    try:
        items = d.items.decode(data)
    except UNREADABLE as exc:  # {"events": 5}, or a syntax error after the first bad event
        path, reason = _located(exc, name)
        raise EventError(f"body is not a valid event list: {reason}", path=path) from None
    good: list[Event] = []
    bad: list[Rejection] = []
    for i, raw in enumerate(items):
        try:
            good.append(d.one.decode(raw))
        except UNREADABLE as exc:
            bad.append(_rejection(raw, d, i, exc, f"{name}[{i}]"))
    return Decoded(good, bad)


def encode_events(events: Sequence[Event], fmt: Format = "json") -> bytes:
    """Encode a list of events (the form ``decode_events`` reads fastest)."""
    return _json_enc.encode(events) if fmt == "json" else _mp_enc.encode(events)
