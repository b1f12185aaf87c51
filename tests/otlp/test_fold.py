"""``OtlpIntake`` over a real ``Aggregator``: what a decoded export adds to which
component, and ``gunzip``, the bound on what a compressed body unpacks to."""

from __future__ import annotations

import gzip
import random
import re
from bisect import bisect_left
from collections import Counter

import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from streammetrics.aggregator import Aggregator
from streammetrics.http.bodies import BodyTooLarge, gunzip
from streammetrics.intake.otlp import OtlpIntake, decode_request
from streammetrics.intake.otlp_config import OtlpConfig
from tests.otlp.builders import SPEC_EXAMPLE, request, span


def test_items_latency_and_span_latency_per_component() -> None:
    agg = Aggregator()
    intake = OtlpIntake(agg, OtlpConfig())
    spans = [span(0.003), span(0.003, error=True), span(0.2, kind=3), span(0.02, kind=5)]
    result = intake.fold(request({"api": spans}))
    assert (result.accepted, result.rejected, result.message) == (4, 0, "")
    snap = agg.figures()
    c = snap.detailed_components["api"]
    assert (c.items_processed, c.errors_encountered, c.last_error) == (2, 1, "boom")
    hist = snap.component_histograms["api"]
    buckets = snap.histogram_buckets
    # the CLIENT span's 0.2 s is a span, not an item's latency
    assert hist[bisect_left(buckets, 0.003)] == 2
    assert hist[bisect_left(buckets, 0.02)] == 1
    assert sum(hist) == 3
    assert snap.latency_sums["api"] == pytest.approx(0.026)
    assert c.span_latency is not None and c.span_latency.count == 4
    assert c.status == "running"


def test_distinct_trace_ids_count_once_across_requests() -> None:
    agg = Aggregator()
    intake = OtlpIntake(agg, OtlpConfig())
    t1, t2 = b"\x01" * 16, b"\x02" * 16
    intake.fold(request({"a": [span(trace=t1), span(trace=t1)], "b": [span(trace=t2)]}))
    intake.fold(request({"a": [span(trace=t2)]}))
    traces = agg.figures().traces
    assert (traces.total_traces, traces.completed_spans, traces.active_spans) == (2, 4, 0)


def test_unobserved_services_are_skipped_not_rejected() -> None:
    agg = Aggregator(observe=["a"])
    intake = OtlpIntake(agg, OtlpConfig())
    result = intake.fold(request({"a": [span()], "b": [span(), span()]}))
    assert result.rejected == 0
    assert set(agg.figures().detailed_components) == {"a"}
    assert agg.statistics().rejected == {}


def test_a_resource_without_service_name_is_unknown_service() -> None:
    agg = Aggregator()
    req = request({"x": [span()]})
    del req.resource_spans[0].resource.attributes[:]
    OtlpIntake(agg, OtlpConfig()).fold(req)
    assert agg.figures().detailed_components["unknown_service"].items_processed == 1


def test_the_spec_example_decodes_with_its_hex_ids() -> None:
    req = decode_request(SPEC_EXAMPLE.encode(), "json")
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    assert sp.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert sp.span_id.hex() == "eee19b7ec3c1b174"
    assert sp.parent_span_id.hex() == "eee19b7ec3c1b173"
    assert sp.end_time_unix_nano - sp.start_time_unix_nano == 1_000_000_000


def test_gunzip_is_bounded_by_what_it_unpacks_to() -> None:
    assert gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 6) == b"abcdef"
    assert gunzip(gzip.compress(b"x" * 1000), 1000) == b"x" * 1000
    with pytest.raises(BodyTooLarge):
        gunzip(gzip.compress(b"x" * 1001), 1000)
    with pytest.raises(BodyTooLarge):  # the second member passes the limit
        gunzip(gzip.compress(b"x" * 600) + gzip.compress(b"x" * 600), 1000)
    with pytest.raises(ValueError, match="cut short"):
        gunzip(gzip.compress(b"x" * 100)[:-8], 1000)
    with pytest.raises(ValueError, match="not valid gzip"):
        gunzip(b"plain", 1000)


def test_service_and_span_names_keep_the_name_rule() -> None:
    """A service.name or span name with a control character would become a component
    label raw: its spans are rejected with the reason, the other services still fold."""
    agg = Aggregator()
    intake = OtlpIntake(agg, OtlpConfig())
    result = intake.fold(request({"api": [span()], "api\x1b[2J": [span(), span()]}))
    assert (result.accepted, result.rejected) == (1, 2)
    assert result.message == (
        "2 spans: service.name: a name must be printable characters only; character 3 is "
        "U+001B (a control character)"
    )
    assert set(agg.figures().detailed_components) == {"api"}
    by_span = OtlpIntake(Aggregator(), OtlpConfig(group_by="service_and_span"))
    result = by_span.fold(request({"api": [span(name="GET\x00/"), span(name="ok")]}))
    assert (result.accepted, result.rejected) == (1, 1)
    assert "service and span name: a name must be printable characters only" in (result.message)


def test_the_trace_id_table_is_bounded_oldest_out() -> None:
    agg = Aggregator(max_spans=2)
    intake = OtlpIntake(agg, OtlpConfig())
    t1, t2, t3 = (bytes([i]) * 16 for i in (1, 2, 3))
    totals = []
    for trace in (t1, t2, t3, t2, t1):  # t3 drops t1; t2 is still held; t1 is new again
        intake.fold(request({"a": [span(trace=trace), span(trace=trace)]}))
        totals.append(agg.figures().traces.total_traces)
    assert totals == [1, 2, 3, 3, 4]
    assert agg.figures().traces.completed_spans == 10


def test_a_batch_with_one_unfoldable_span_folds_the_rest_exactly() -> None:
    """A batch with a span that cannot be folded: that span is rejected, its other spans
    count exactly as in a batch without it."""
    clean = [span(0.003), span(0.004, error=True), span(0.2, kind=3), span(0.02, kind=5)]
    bad = span(0.001)
    bad.trace_id = b"\x01" * 8
    figures = []
    for spans in (clean, [*clean[:2], bad, *clean[2:]]):
        agg = Aggregator()
        result = OtlpIntake(agg, OtlpConfig()).fold(request({"api": spans}))
        snap = agg.figures()
        c = snap.detailed_components["api"]
        figures.append(
            (
                (c.items_processed, c.errors_encountered, c.last_error),
                snap.component_histograms["api"],
                snap.latency_sums["api"],
                c.span_latency,
                snap.traces.completed_spans,
            )
        )
        assert result.accepted == 4
    assert figures[0] == figures[1]


@pytest.mark.parametrize("copies", [1, 8], ids=["few", "in-bulk"])
def test_only_an_item_whose_status_is_error_fails(copies: int) -> None:
    """Spans with a status that is not ERROR (OK, UNSET with a message, an empty one),
    an ERROR on a span that is no item, and kinds that are no ``SpanKind`` (past 5, past
    a byte, negative), decoded from the wire: only the SERVER spans are items, and of
    those only the one whose status is ERROR failed; every span counts in the span
    latency and in the traces."""
    ok = span(0.001)
    ok.status.code = 1  # type: ignore[assignment]
    unset_with_message = span(0.002)
    unset_with_message.status.message = "fine"
    empty = span(0.003)
    empty.status.SetInParent()
    failed = span(0.004, error=True)
    client_failed = span(0.005, kind=3, error=True)
    client_failed.status.message = "no item"
    odd = [span(0.006, kind=k) for k in (6, 255, 256, 2**31 - 1, -1)]
    batch = [ok, unset_with_message, empty, failed, client_failed, *odd] * copies
    req = ExportTraceServiceRequest.FromString(request({"api": batch}).SerializeToString())
    assert all(sp.HasField("status") for sp in req.resource_spans[0].scope_spans[0].spans[:5])
    agg = Aggregator()
    result = OtlpIntake(agg, OtlpConfig()).fold(req)
    assert (result.accepted, result.rejected) == (10 * copies, 0)
    snap = agg.figures()
    c = snap.detailed_components["api"]
    assert (c.items_processed, c.errors_encountered, c.last_error) == (3 * copies, copies, "boom")
    assert sum(snap.component_histograms["api"]) == 4 * copies
    assert snap.latency_sums["api"] == pytest.approx(0.010 * copies)
    assert c.span_latency is not None and c.span_latency.count == 10 * copies
    assert snap.traces.completed_spans == 10 * copies


@pytest.mark.parametrize("spans", [20, 3], ids=["in-bulk", "few"])
def test_item_spans_extremes_clamp_the_quantiles(spans: int) -> None:
    """Server spans of 10.3 and 10.5 ms: the item latency's quantiles stay inside what was
    observed, not across the bucket both fall in; a span with a bad duration in the batch
    (rejected, the rest folded) keeps them too. The 0.2 s CLIENT span is no item."""
    for bad in (False, True):
        agg = Aggregator()
        batch = [span(0.0103) for _ in range(spans)] + [span(0.0105), span(0.2, kind=3)]
        if bad:
            broken = span(0.01)
            broken.end_time_unix_nano = broken.start_time_unix_nano - 1
            batch.append(broken)
        OtlpIntake(agg, OtlpConfig()).fold(request({"api": batch}))
        lat = agg.figures().detailed_components["api"].latency
        assert lat.p50 is not None and lat.p99 is not None
        assert 0.0103 - 1e-9 <= lat.p50 <= lat.p99 <= 0.0105 + 1e-9, (bad, lat)


def _random_request(rng: random.Random) -> ExportTraceServiceRequest:
    """Resources (a service seen twice, one without ``service.name``, names the name rule
    refuses), several scopes each, spans of every kind, failed with or without a
    message, a few with a trace id that is not 16 bytes or an end before their start."""
    services = ["api", "db", "api", "db", None, "bad\x00name", "x" * 300, "worker", "worker"]
    req = ExportTraceServiceRequest()
    traces = [rng.randbytes(16) for _ in range(6)]
    for _ in range(rng.randint(2, 6)):
        rs = req.resource_spans.add()
        service = rng.choice(services)
        if service is not None:
            rs.resource.attributes.append(
                KeyValue(key="service.name", value=AnyValue(string_value=service))
            )
        for _ in range(rng.randint(1, 3)):
            ss = rs.scope_spans.add()
            for _ in range(rng.choice((0, 1, 3, 20, 60))):  # both sides of bulk bucketing
                sp = span(
                    rng.lognormvariate(-5, 2),
                    kind=rng.randint(0, 5),
                    error=rng.random() < 0.2,
                    trace=rng.choice(traces),
                    name=rng.choice(("GET /", "POST /x", "", "q\x01", "n" * 300)),
                )
                if sp.status.code == 2:  # which failure is the last one shows
                    sp.status.message = "" if rng.random() < 0.3 else f"boom {len(ss.spans)}"
                if rng.random() < 0.05:
                    sp.end_time_unix_nano = sp.start_time_unix_nano  # zero: a valid span
                if rng.random() < 0.03:
                    sp.trace_id = rng.randbytes(rng.choice((0, 8, 17)))
                if rng.random() < 0.03:
                    sp.end_time_unix_nano = sp.start_time_unix_nano - rng.randint(1, 10**6)
                ss.spans.append(sp)
    return req


def _one_by_one(req: ExportTraceServiceRequest) -> list[ExportTraceServiceRequest]:
    """Each span of ``req`` alone in a request, with its own resource, in order."""
    out = []
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                one = ExportTraceServiceRequest()
                r = one.resource_spans.add()
                r.resource.CopyFrom(rs.resource)
                r.scope_spans.add().spans.append(sp)
                out.append(one)
    return out


def _reasons(messages: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for message in messages:
        for n, why in re.findall(r"(\d+) spans: (.*?)(?=; \d+ spans: |$)", message):
            counts[why] += int(n)
    return counts


@pytest.mark.parametrize("group_by", ["service", "service_and_span"])
@pytest.mark.parametrize("seed", range(10))
def test_a_batch_folds_as_its_spans_one_by_one(seed: int, group_by: str) -> None:
    """The batched sum (fields read for a whole list of spans, bucketed in bulk, the
    unfoldable dropped) ends where folding every span in a request of its own ends:
    items, errors, last error, histograms, sums, extremes, span latency, traces and every
    rejection with its reason."""
    rng = random.Random(seed)
    kinds = rng.sample(["internal", "server", "client", "producer", "consumer"], rng.randint(1, 3))
    config = msgspec.convert({"group_by": group_by, "item_kinds": kinds}, OtlpConfig)
    req = _random_request(rng)
    ends = []
    for requests in ([req], _one_by_one(req)):
        agg = Aggregator(clock=lambda: 1000.0)
        intake = OtlpIntake(agg, config)
        results = [intake.fold(r) for r in requests]
        snap = agg.figures()
        comps = {
            name: (
                c.items_processed,
                c.errors_encountered,
                c.last_error,
                snap.component_histograms.get(name),
                round(snap.latency_sums.get(name, 0.0), 9),
                c.latency,
                None if c.span_latency is None else c.span_latency.count,
            )
            for name, c in snap.detailed_components.items()
        }
        ends.append(
            (
                comps,
                snap.traces,
                agg.statistics().rejected,
                sum(r.accepted for r in results),
                sum(r.rejected for r in results),
                _reasons([r.message for r in results]),
            )
        )
    batch, single = ends
    assert batch[3] + batch[4] == sum(
        len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans
    )
    assert batch[1:] == single[1:]
    assert batch[0].keys() == single[0].keys()
    for name in batch[0]:
        b, s = batch[0][name], single[0][name]
        assert b[:5] == s[:5] and b[6] == s[6], name
        assert (b[5] is None) == (s[5] is None), name
        if b[5] is not None and s[5] is not None:
            for q in ("p50", "p95", "p99"):
                assert getattr(b[5], q) == pytest.approx(getattr(s[5], q), rel=1e-9), (name, q)
