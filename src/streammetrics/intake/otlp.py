"""Spans exported over OTLP, folded into an endpoint's aggregates.

A span is one piece of work in a service: its component is the resource's
``service.name`` (with ``group_by: service_and_span``, that and the span's name), its
duration is its latency, and a status of ``ERROR`` makes it a failed item. Only spans of
the ``item_kinds`` (by default ``SERVER`` and ``CONSUMER``, where work enters a service)
are items, so a request that makes ten client calls counts once; every span, of any
kind, counts in ``traces`` (distinct trace ids, completed spans) and in its component's
``span_latency``.

Decoding is the ``opentelemetry-proto`` classes' (protobuf's own parser, and its JSON
mapping for OTLP/JSON), never hand-written. The spans are summed per component here
(``SpanDelta``) and folded once per component, so a batch of 512 spans costs 512 passes
of a short loop and a handful of window updates.

A span that cannot be folded is rejected alone, its reason counted in
``streammetrics_events_rejected_total{reason}`` and returned for the export's
partial-success answer; the other spans of its batch still fold. Only a body that does
not decode at all is an error (``EventError``).
"""

from __future__ import annotations

import base64
from collections import Counter
from itertools import compress, repeat
from operator import add, attrgetter, sub
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from ..buckets import bucket_sorted
from ..errors import EventError
from ..model.events import Delta
from ..model.nesting import MAX_DEPTH, json_too_deep
from ..model.spans import SpanDelta
from ..model.types import MAX_NAME, name_problem
from .otlp_config import OtlpConfig

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

    from ..aggregator import Aggregator

__all__ = (
    "UNKNOWN_SERVICE",
    "Encoding",
    "OtlpIntake",
    "OtlpResult",
    "OtlpStatistics",
    "decode_request",
    "encode_response",
    "encode_status",
)

Encoding = Literal["protobuf", "json"]
#: The component of spans whose resource names no service, as the SDKs name it.
UNKNOWN_SERVICE: Final = "unknown_service"
#: ``Status.StatusCode.STATUS_CODE_ERROR``.
_ERROR: Final = 2
#: A trace id is 16 bytes; an empty or shorter one is invalid (OTLP).
_TRACE_ID_BYTES: Final = 16
#: The id fields of OTLP/JSON, hex there, base64 in protobuf's JSON mapping.
_SPAN_IDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_LINK_IDS: Final = ("traceId", "spanId", "trace_id", "span_id")
#: google.rpc codes of the error answers.
INVALID_ARGUMENT: Final = 3
UNAVAILABLE: Final = 14
RESOURCE_EXHAUSTED: Final = 8

_json_any = msgspec.json.Decoder()


class OtlpResult(msgspec.Struct, frozen=True):
    """What became of one export request."""

    accepted: int
    """Spans folded."""
    rejected: int
    """Spans not folded (the partial-success ``rejected_spans``)."""
    message: str = ""
    """Why, by reason and count: the partial-success ``error_message``; empty when none
    was rejected."""


class OtlpStatistics(msgspec.Struct, frozen=True):
    requests: int
    """Export requests that reached the receiver."""
    unreadable: int
    """Of them, requests whose body did not decode (answered 400)."""
    accepted: int
    """Spans folded."""
    rejected: int
    """Spans rejected, by any reason."""


def decode_request(data: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` from a protobuf or OTLP/JSON body.

    OTLP/JSON is protobuf's JSON mapping with one difference: trace and span ids are
    hex, not base64. They are turned into base64 before the mapping reads the body, so
    every other rule (lowerCamelCase or original field names, enums as numbers or names,
    64-bit integers as strings or numbers, unknown fields ignored) is the mapping's own.
    Raises ``EventError`` naming the problem when the body does not decode.
    """
    if encoding == "protobuf":
        try:
            return ExportTraceServiceRequest.FromString(data)
        except (DecodeError, RecursionError) as exc:
            raise EventError(
                f"body is not an OTLP protobuf ExportTraceServiceRequest: {exc}"
            ) from None
    if json_too_deep(data):
        raise EventError(f"body is nested more than {MAX_DEPTH} levels deep")
    try:
        doc = _json_any.decode(data)
    except msgspec.DecodeError as exc:
        raise EventError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventError(f"body is not a JSON object but {type(doc).__name__}")
    _ids_to_base64(doc)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise EventError(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _ids_to_base64(doc: dict[str, Any]) -> None:
    """Rewrite the hex trace and span ids of an OTLP/JSON body as base64, in place.

    Only where ids sit (spans and their links); a structure that is not where OTLP puts
    one is left for the JSON mapping to refuse with its own message.
    """
    for i, rs in enumerate(_items(doc, "resourceSpans", "resource_spans")):
        for j, ss in enumerate(_items(rs, "scopeSpans", "scope_spans")):
            for k, span in enumerate(_items(ss, "spans")):
                at = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                _hex_fields(span, _SPAN_IDS, at)
                for m, link in enumerate(_items(span, "links")):
                    _hex_fields(link, _LINK_IDS, f"{at}.links[{m}]")


def _items(obj: Any, *names: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            return value
    return []


def _hex_fields(obj: Any, names: tuple[str, ...], at: str) -> None:
    if not isinstance(obj, dict):
        return
    for name in names:
        value = obj.get(name)
        if isinstance(value, str) and value:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise EventError(
                    f"{name} must be hex (OTLP/JSON), got {value[:64]!r}", path=f"{at}.{name}"
                ) from None
            obj[name] = base64.b64encode(raw).decode("ascii")


def encode_response(result: OtlpResult, encoding: Encoding) -> bytes:
    """The ``ExportTraceServiceResponse`` of an export: empty when every span folded,
    else its ``partial_success`` with the count and the reasons of the rejected."""
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = result.rejected
        response.partial_success.error_message = result.message
    if encoding == "protobuf":
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


def encode_status(code: int, message: str, encoding: Encoding) -> bytes:
    """The body of an error answer: a ``google.rpc.Status``, as OTLP/HTTP has it."""
    status = Status(code=code, message=message)
    if encoding == "protobuf":
        return status.SerializeToString()
    return json_format.MessageToJson(status, indent=None).encode()


def _service_name(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value) or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


class _Group:
    """Spans of one component in one request, being summed."""

    __slots__ = (
        "errors",
        "hist",
        "last_error",
        "lmax",
        "lmin",
        "lsum",
        "processed",
        "shist",
        "spans",
        "ssum",
        "traces",
    )

    def __init__(self, nbuckets: int) -> None:
        self.processed = self.errors = self.spans = 0
        self.lsum = self.ssum = 0  # nanoseconds
        # The item spans' shortest and longest duration (ns), which clamp the quantiles.
        self.lmin: int | None = None
        self.lmax: int | None = None
        self.hist = [0] * nbuckets
        self.shist = [0] * nbuckets
        self.last_error: str | None = None
        self.traces: set[bytes] = set()


class OtlpIntake:
    """Decode export requests, sum their spans per component and fold them into one
    aggregator, counting every span that does not make it."""

    def __init__(self, aggregator: Aggregator, config: OtlpConfig) -> None:
        self.aggregator = aggregator
        self.config = config
        self._items = config.item_kind_numbers
        self._item_table = item_kind_table(self._items)
        self._by_span = config.group_by == "service_and_span"
        # The aggregator's latency buckets in nanoseconds: a span's duration (integer
        # nanoseconds) is bucketed without a float conversion, into the buckets the
        # aggregator counts in, so the histograms add up.
        self._bounds_ns = [round(b * 1e9) for b in aggregator.ladder.bounds]
        self._nbuckets = aggregator.ladder.nbuckets
        self._requests = self._unreadable = self._accepted = self._rejected = 0

    def export(self, data: bytes, encoding: Encoding) -> OtlpResult:
        """Fold one request body. Raises ``EventError`` when the body does not decode
        (counted as one ``malformed`` rejection); a span that cannot be folded is
        rejected alone and named in the result."""
        try:
            request = decode_request(data, encoding)
        except EventError:
            self.refuse()
            raise
        return self.fold(request)

    def refuse(self) -> None:
        """Count a request whose body could not be read (does not decode, or is gzip
        that does not unpack) as one ``malformed`` rejection."""
        self._requests += 1
        self._unreadable += 1
        self.aggregator.reject("malformed")

    def fold(self, request: ExportTraceServiceRequest) -> OtlpResult:
        """Fold a decoded request's spans."""
        self._requests += 1
        groups, reasons = self._sum(request)
        names = list(groups)
        deltas = [_delta(name, groups[name]) for name in names]
        refused = self.aggregator.fold_spans(deltas)
        for i in refused:
            reasons[
                f"component limit {self.aggregator.max_components} reached ({names[i]!r} "
                "not registered)"
            ] += groups[names[i]].spans
        malformed = sum(reasons.values()) - sum(groups[names[i]].spans for i in refused)
        if malformed:
            self.aggregator.reject("malformed", malformed)
        rejected = sum(reasons.values())
        accepted = sum(g.spans for g in groups.values()) - (rejected - malformed)
        self._accepted += accepted
        self._rejected += rejected
        message = "; ".join(f"{n} spans: {why}" for why, n in reasons.items())
        return OtlpResult(accepted, rejected, message)

    def _sum(self, request: ExportTraceServiceRequest) -> tuple[dict[str, _Group], Counter[str]]:
        """The request's spans summed per component, and the rejected counted by reason."""
        groups: dict[str, _Group] = {}
        reasons: Counter[str] = Counter()
        items, table = self._items, self._item_table
        for rs in request.resource_spans:
            service = _service_name(rs.resource)
            # the name rule, checked once per resource (as for events, once per name)
            problem = name_problem(service)
            if problem is not None:
                n = sum(len(ss.spans) for ss in rs.scope_spans)
                if n:
                    long = len(service) > MAX_NAME
                    why = f"service.name is longer than {MAX_NAME} characters"
                    reasons[why if long else f"service.name: {problem}"] += n
                continue
            if not self._by_span:
                g = groups.get(service)
                if g is None:
                    g = groups[service] = _Group(self._nbuckets)
                for ss in rs.scope_spans:
                    _add(g, ss.spans, items, table, self._bounds_ns, reasons)
                continue
            for span_name, spans in _by_name(rs.scope_spans).items():
                name = f"{service}:{span_name}" if span_name else service
                if len(name) > MAX_NAME:
                    reasons[f"service and span name longer than {MAX_NAME} characters"] += len(
                        spans
                    )
                    continue
                problem = name_problem(name)
                if problem is not None:
                    reasons[f"service and span name: {problem}"] += len(spans)
                    continue
                g = groups.get(name)
                if g is None:
                    g = groups[name] = _Group(self._nbuckets)
                _add(g, spans, items, table, self._bounds_ns, reasons)
        empty = [name for name, g in groups.items() if not g.spans]
        for name in empty:
            del groups[name]
        return groups, reasons

    def statistics(self) -> OtlpStatistics:
        return OtlpStatistics(
            requests=self._requests,
            unreadable=self._unreadable,
            accepted=self._accepted,
            rejected=self._rejected,
        )


#: The span fields the receiver reads, each fetched for a whole list of spans by
#: ``map`` (the loop then runs in C, with no Python bytecode per span).
_START: Final = attrgetter("start_time_unix_nano")
_END: Final = attrgetter("end_time_unix_nano")
_TRACE: Final = attrgetter("trace_id")
_KIND: Final = attrgetter("kind")
_CODE: Final = attrgetter("status.code")
#: ``Span.HasField``, unbound, so that ``map`` calls it on each span with ``"status"``.
_HAS_FIELD: Final = Span.HasField
_STATUS: Final[Literal["status"]] = "status"


def item_kind_table(items: frozenset[int]) -> bytes:
    """A ``bytes.translate`` table from a ``SpanKind`` number to 1 for the item kinds,
    else 0: the bytes of a batch's kinds, translated, select its item spans
    (``itertools.compress``) without a Python call per span."""
    return bytes(1 if k in items else 0 for k in range(256))


def _add(
    g: _Group,
    spans: RepeatedCompositeFieldContainer[Span] | list[Span],
    items: frozenset[int],
    table: bytes,
    bounds: list[int],
    reasons: Counter[str],
) -> None:
    """Sum ``spans`` into ``g``: the hot loop of the receiver.

    Every read of a protobuf field from Python makes an object, and the span objects
    themselves are made as the list is walked, so what is left to save is the
    interpreter's own work between those reads: each field is read for all spans at
    once (``map`` over the list), the item spans are selected by their kinds' bytes
    (``item_kind_table``), durations are bucketed by sorting them once (a C sort of
    ints, then one bisection per bucket bound, not one per span), and ``status`` is read
    only from the item spans that have one: reading it makes a sub-message object
    (about as dear as the span's own), and most spans carry none, which a presence test
    answers without making it. Spans that cannot be folded (end before start, a trace
    id that is not 16 bytes) are rare: only a batch with any of them is walked span by
    span (``_foldable``), to count each one's reason and keep the rest."""
    # The span objects, made once and read field by field. A slice, not ``list()``: the
    # repeated field builds the list in one C call instead of being walked index by
    # index through the sequence protocol.
    spans = spans[:]
    if not spans:
        return
    durations = list(map(sub, map(_END, spans), map(_START, spans)))
    traces = set(map(_TRACE, spans))
    ordered = sorted(durations)  # bucketed below; its first is the shortest
    if ordered[0] < 0 or set(map(len, traces)) != {_TRACE_ID_BYTES}:
        spans, durations = _foldable(spans, durations, reasons)
        if not spans:
            return
        traces = set(map(_TRACE, spans))
        ordered = sorted(durations)
    try:
        is_item = bytes(map(_KIND, spans)).translate(table)
    except ValueError:  # a kind beyond 0..255 (no SpanKind has one): not an item
        is_item = bytes(map(items.__contains__, map(_KIND, spans)))
    g.spans += len(spans)
    g.ssum += sum(ordered)
    _count(g.shist, ordered, bounds)
    if g.traces:
        g.traces |= traces
    else:
        g.traces = traces
    item_durations = list(compress(durations, is_item))
    if not item_durations:
        return
    item_spans = list(compress(spans, is_item))
    with_status = list(compress(item_spans, map(_HAS_FIELD, item_spans, repeat(_STATUS))))
    codes = list(map(_CODE, with_status))
    errors = codes.count(_ERROR)
    item_durations.sort()
    g.lsum += sum(item_durations)
    _extremes(g, item_durations[0], item_durations[-1])
    _count(g.hist, item_durations, bounds)
    g.processed += len(item_durations) - errors
    g.errors += errors
    if errors:  # the last failed item with a message is the component's last error
        for sp, code in zip(reversed(with_status), reversed(codes), strict=True):
            if code == _ERROR and sp.status.message:
                g.last_error = sp.status.message[:2000]
                break


_NAME: Final = attrgetter("name")


def _by_name(scopes: RepeatedCompositeFieldContainer[ScopeSpans]) -> dict[str, list[Span]]:
    """The spans of a resource's scopes by span name, each list in the order the spans
    came, the names in the order they first came. Each name is read once, for a whole
    scope (``map``), and the component's name (``service:span``) made once per name in
    ``_sum``, not once per span."""
    by_name: dict[str, list[Span]] = {}
    for ss in scopes:
        spans = ss.spans[:]
        for sp, name in zip(spans, map(_NAME, spans), strict=True):
            group = by_name.get(name)
            if group is None:
                by_name[name] = [sp]
            else:
                group.append(sp)
    return by_name


def _count(hist: list[int], ordered: list[int], bounds: list[int]) -> None:
    """Add sorted ``ordered`` to ``hist`` as ``bisect_left(bounds, d)`` places each (+Inf
    last): one bisection per bound spanned (``bucket_sorted``), one slice addition."""
    first, counts = bucket_sorted(ordered, bounds)
    end = first + len(counts)
    hist[first:end] = map(add, hist[first:end], counts)


def _foldable(
    spans: list[Span], durations: list[int], reasons: Counter[str]
) -> tuple[list[Span], list[int]]:
    """The spans that can be folded and their durations; each other one is counted in
    ``reasons`` with why not."""
    kept: list[Span] = []
    kept_durations: list[int] = []
    for sp, d in zip(spans, durations, strict=True):
        if d < 0:
            reasons["end_time_unix_nano before start_time_unix_nano"] += 1
        elif len(sp.trace_id) != _TRACE_ID_BYTES:
            reasons["trace_id is not 16 bytes"] += 1
        else:
            kept.append(sp)
            kept_durations.append(d)
    return kept, kept_durations


def _extremes(g: _Group, lo: int, hi: int) -> None:
    if g.lmin is None or lo < g.lmin:
        g.lmin = lo
    if g.lmax is None or hi > g.lmax:
        g.lmax = hi


def _delta(name: str, g: _Group) -> SpanDelta:
    items = g.processed + g.errors
    return SpanDelta(
        items=Delta(
            name,
            processed=g.processed,
            errors=g.errors,
            latency_counts=g.hist if items else None,
            latency_sum=g.lsum * 1e-9,
            latency_min=None if g.lmin is None else g.lmin * 1e-9,
            latency_max=None if g.lmax is None else g.lmax * 1e-9,
            last_error=g.last_error,
        ),
        spans=g.spans,
        span_counts=g.shist,
        span_sum=g.ssum * 1e-9,
        trace_ids=list(map(bytes.hex, g.traces)),
    )
