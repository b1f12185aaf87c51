"""Property tests: the event decoder takes any bytes and any JSON shape without crashing,
and the window fold agrees with a brute-force model whatever the events and clock steps."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.errors import EventError
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import KINDS, Decoded, decode_events, encode_events
from streammetrics.model.types import MAX_NAME
from streammetrics.windows import N_BUCKETS, VIEWS, RollingWindow, bucket_index, quantile

# Bounded runs: the whole module stays within a few seconds; no example database on disk.
FAST = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- the decoder -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
names = st.text(max_size=8) | st.sampled_from(["", "n" * MAX_NAME, "n" * (MAX_NAME + 1)])
field_values: dict[str, st.SearchStrategy[Any]] = {
    "component": names | json_values,
    "kind": st.sampled_from([*KINDS, "bogus", ""]) | json_values,
    "count": st.integers(min_value=-5, max_value=2_000_000_000) | json_values,
    "latency": st.floats(min_value=-1, max_value=100_000) | st.none() | json_values,
    "stream": names | st.none(),
    "detail": st.text(max_size=10) | st.sampled_from(["d" * 2000, "d" * 2001]) | st.none(),
    "timestamp": st.floats(allow_nan=False) | st.none(),
    "bytes": st.integers(min_value=-1, max_value=2_000_000_000),
    "id": names | st.none(),
    "unknown": json_values,
}
event_like = st.fixed_dictionaries(
    {"component": field_values["component"], "kind": field_values["kind"]},
    optional={k: v for k, v in field_values.items() if k not in ("component", "kind")},
)
bodies = (
    json_values
    | event_like
    | st.lists(event_like | json_values, max_size=8)
    | st.fixed_dictionaries({"events": st.lists(event_like | json_values, max_size=8)})
    | st.fixed_dictionaries({"events": json_values})
)


def _check(result: Decoded) -> None:
    assert isinstance(result, Decoded)
    for ev in result.events:
        assert isinstance(ev, Event)
        assert 1 <= len(ev.component) <= MAX_NAME
        assert ev.kind in KINDS
        assert msgspec.json.decode(msgspec.json.encode(ev), type=Event) == ev
    for r in result.rejected:
        assert r.path.startswith(("event", "$")), r
        assert r.reason


@FAST
@given(st.binary(max_size=300), st.sampled_from(["json", "msgpack"]))
def test_any_bytes_decode_to_events_or_an_event_error(data: bytes, fmt: Any) -> None:
    try:
        result = decode_events(data, fmt)
    except EventError as exc:
        assert exc.path and exc.reason
        return
    _check(result)


@FAST
@given(bodies, st.sampled_from(["json", "msgpack"]))
def test_any_json_shape_decodes_without_crashing(body: Any, fmt: Any) -> None:
    data = msgspec.json.encode(body) if fmt == "json" else msgspec.msgpack.encode(body)
    try:
        result = decode_events(data, fmt)
    except EventError:
        return
    _check(result)
    items = (
        body if isinstance(body, list) else body.get("events") if isinstance(body, dict) else None
    )
    if isinstance(items, list) and not (isinstance(body, dict) and "component" in body):
        # a list (or batch): every item is either decoded or rejected with its index
        assert len(result.events) + len(result.rejected) == len(items)
        assert [r.index for r in result.rejected] == sorted({r.index for r in result.rejected})
        assert all(r.path.startswith(f"events[{r.index}]") for r in result.rejected)


good_events = st.builds(
    Event,
    component=st.text(min_size=1, max_size=8) | st.just("c" * MAX_NAME),
    kind=st.sampled_from(KINDS),
    count=st.integers(min_value=0, max_value=1_000_000_000),
    latency=st.none() | st.floats(min_value=0, max_value=86_400),
    stream=st.none() | st.text(min_size=1, max_size=8),
    detail=st.none() | st.text(max_size=10) | st.just("d" * 2000),
)


@FAST
@given(st.lists(good_events, max_size=10), st.sampled_from(["json", "msgpack"]))
def test_valid_events_round_trip(events: list[Event], fmt: Any) -> None:
    assert decode_events(encode_events(events, fmt), fmt) == Decoded(events, [])


# -- the window fold -------------------------------------------------------------------------

steps = st.one_of(
    st.floats(min_value=0, max_value=2),
    st.sampled_from([0.0, 0.999, 1.0, 9.5, 10.0, 59.0, 61.0, 299.0, 301.0, 361.0, 1000.0]),
)
latencies = st.none() | st.floats(min_value=0, max_value=200)
adds = st.tuples(
    st.just("add"),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 10_000),
    latencies,
)
hist_adds = st.tuples(
    st.just("hist"),
    st.lists(st.integers(0, 50), min_size=N_BUCKETS, max_size=N_BUCKETS),
    st.floats(min_value=0, max_value=100),
)
operations = st.lists(
    st.one_of(adds, hist_adds, st.tuples(st.just("step"), steps), st.tuples(st.just("view"))),
    max_size=60,
)


def _first_tick(tick: int, seconds: int) -> int:
    """The oldest one-second slot a view of ``seconds`` still holds (see windows.py)."""
    if seconds == 300:
        return (tick // 10 - 29) * 10
    return tick - (seconds - 1)


@FAST
@given(st.floats(min_value=0, max_value=1e6), operations)
def test_window_views_match_a_brute_force_model(start: float, ops: list[tuple[Any, ...]]) -> None:
    now = start
    w = RollingWindow(now)
    # every fold, with the tick it landed in: (tick, processed, errors, messages, bytes, hist,
    # latency sum, smallest latency, largest latency)
    folded: list[tuple[int, int, int, int, int, list[int], float, float, float]] = []
    for op in ops:
        if op[0] == "step":
            now += op[1]
        elif op[0] == "add":
            _, p, e, m, b, lat = op
            w.add(now, p, e, m, b, lat)
            hist = [0] * N_BUCKETS
            if lat is not None:
                hist[bucket_index(lat)] += 1
            lo, hi = (lat, lat) if lat is not None else (math.inf, -math.inf)
            folded.append((int(now // 1.0), p, e, m, b, hist, lat or 0.0, lo, hi))
        elif op[0] == "hist":
            _, counts, lsum = op
            w.add_histogram(now, counts, lsum)
            # folded without its extremes: every view holding it is unclamped
            lo, hi = (-math.inf, math.inf) if any(counts) else (math.inf, -math.inf)
            folded.append((int(now // 1.0), 0, 0, 0, 0, list(counts), lsum, lo, hi))
        else:
            _check_views(w, now, folded)
    _check_views(w, now, folded)
    # lifetime totals are conserved, whatever left the views
    p, e, m, b, lc, ls = w.totals()
    assert (p, e, m, b) == tuple(sum(f[i] for f in folded) for i in (1, 2, 3, 4))
    assert lc == sum(sum(f[5]) for f in folded) == sum(w.total_histogram())
    assert math.isclose(ls, sum(f[6] for f in folded), rel_tol=1e-9, abs_tol=1e-6)


def _check_views(w: RollingWindow, now: float, folded: list[Any]) -> None:
    tick = int(now // 1.0)
    totals = w.totals()
    for seconds in VIEWS:
        v = w.view(now, seconds)
        first = _first_tick(tick, seconds)
        inside = [f for f in folded if f[0] >= first]
        hist = [sum(f[5][i] for f in inside) for i in range(N_BUCKETS)]
        assert (v.processed, v.errors, v.messages, v.bytes) == tuple(
            sum(f[i] for f in inside) for i in (1, 2, 3, 4)
        ), seconds
        assert v.latency_count == sum(hist)
        # clamped to the extremes of what is inside (float32 for completed slots)
        lo = min((f[7] for f in inside), default=math.inf)
        hi = max((f[8] for f in inside), default=-math.inf)
        want = quantile(hist, 0.99, lowest=lo, highest=hi)
        assert v.p99 == (pytest.approx(want, rel=1e-6) if want is not None else None)
        # a view never exceeds the lifetime totals, and rates are never negative
        assert v.processed <= totals[0] and v.errors <= totals[1] and v.messages <= totals[2]
        assert v.items_per_second >= 0 and v.message_rate >= 0
        assert 0.0 <= v.error_rate <= 1.0
        assert v.span_seconds > 0


# -- the aggregator --------------------------------------------------------------------------

agg_events = st.builds(
    Event,
    component=st.sampled_from(["a", "b", "c", "d", "e"]),
    kind=st.sampled_from(KINDS),
    count=st.integers(0, 1000),
    latency=st.none() | st.floats(min_value=0, max_value=100),
    stream=st.none() | st.sampled_from(["s1", "s2"]),
    detail=st.none() | st.sampled_from(["open", "closed", "half_open", "failed", "boom"]),
    span_id=st.none() | st.sampled_from(["x", "y"]),
)


@settings(FAST, max_examples=50)
@given(
    st.lists(st.lists(agg_events, max_size=12), max_size=6),
    st.lists(steps, min_size=6, max_size=6),
    st.integers(1, 6),
)
def test_aggregator_conserves_totals(
    batches: list[list[Event]], clock_steps: list[float], max_components: int
) -> None:
    now = [1000.0]
    agg = Aggregator(clock=lambda: now[0], wall=lambda: 1e9 + now[0], max_components=max_components)
    processed: defaultdict[str, int] = defaultdict(int)
    errors: defaultdict[str, int] = defaultdict(int)
    refused: set[str] = set()
    n_rejected = 0
    for batch, dt in zip(batches, clock_steps, strict=False):
        rejected = agg.fold_events(batch)
        n_rejected += len(rejected)
        bad = {r.index for r in rejected}
        for i, ev in enumerate(batch):
            if i in bad:
                if ev.kind != "breaker":
                    refused.add(ev.component)
                continue
            if ev.kind == "processed":
                processed[ev.component] += ev.count
            elif ev.kind == "error":
                errors[ev.component] += ev.count
        now[0] += dt
    snap = HealthJudge().judge(agg.figures())
    comps = snap.detailed_components
    assert len(comps) <= max_components
    assert refused.isdisjoint(comps)  # a refused component never appears half-counted
    for name, st_ in comps.items():
        assert st_.items_processed == processed[name]
        assert st_.errors_encountered == errors[name]
        for v in st_.windows.values():
            assert v.processed <= st_.items_processed
            assert v.errors <= st_.errors_encountered
    assert sum(snap.rejected.values()) >= n_rejected
    assert 0.0 <= snap.health_score <= 1.0
