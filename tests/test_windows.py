"""RollingWindow, driven by hand: every expected figure below is worked out from the
window's definition (1 s slots; the 10 s / 60 s views are the slot in progress plus the
9 / 59 completed before it; the 300 s view is the 10 s period in progress plus the 29
completed before it), never read back from the code under test."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from streammetrics.windows import (
    LATENCY_BOUNDS,
    N_BUCKETS,
    VIEWS,
    RollingWindow,
    bucket_index,
    quantile,
)

# -- buckets and quantile() ---------------------------------------------------------------


def test_bounds_are_the_documented_sqrt2_ladder() -> None:
    assert len(LATENCY_BOUNDS) == 41
    assert N_BUCKETS == 42
    assert LATENCY_BOUNDS[0] == 0.0001
    assert LATENCY_BOUNDS[2] == 0.0002
    assert LATENCY_BOUNDS[14] == 0.0128
    assert LATENCY_BOUNDS[40] == pytest.approx(104.8576)
    assert list(LATENCY_BOUNDS) == sorted(LATENCY_BOUNDS)


@pytest.mark.parametrize(
    ("latency", "index"),
    [
        (0.0, 0),
        (0.0001, 0),  # le: a latency equal to a bound is in that bound's bucket
        (0.00010001, 1),
        (0.010, 14),  # 0.009050967 < 0.010 <= 0.0128
        (0.0128, 14),
        (0.0129, 15),
        (0.5, 25),  # 0.4096 < 0.5 <= 0.579261875
        (104.8576, 40),
        (105.0, 41),  # +Inf
        (1e9, 41),
    ],
)
def test_bucket_index_is_first_bound_at_or_above(latency: float, index: int) -> None:
    assert bucket_index(latency) == index
    if index < len(LATENCY_BOUNDS):
        assert latency <= LATENCY_BOUNDS[index]
    if index > 0:
        assert latency > LATENCY_BOUNDS[index - 1]


#: 0.010 rounded down to a float32: how a completed slot keeps a smallest latency of 10 ms.
_F32_BELOW_10MS = 0.009999999776482582


def _hist(**counts: int) -> list[int]:
    h = [0] * N_BUCKETS
    for key, c in counts.items():
        h[int(key[1:])] = c
    return h


def test_quantile_interpolates_inside_the_bucket_by_hand() -> None:
    # 90 observations in bucket 14 (0.009050967, 0.0128], 10 in bucket 25 (0.4096, 0.579261875]
    h = _hist(b14=90, b25=10)
    # p50: rank 50 of 100 lies in bucket 14, 50/90 of the way up
    assert quantile(h, 0.5) == pytest.approx(0.009050967 + (0.0128 - 0.009050967) * 50 / 90)
    # p95: rank 95; 90 below bucket 25, so 5/10 of the way through it
    assert quantile(h, 0.95) == pytest.approx(0.4096 + (0.579261875 - 0.4096) * 0.5)
    assert quantile(h, 0.99) == pytest.approx(0.4096 + (0.579261875 - 0.4096) * 0.9)
    assert quantile(h, 1.0) == pytest.approx(0.579261875)


def test_quantile_first_bucket_starts_at_zero_and_inf_gives_largest_bound() -> None:
    assert quantile(_hist(b0=4), 0.5) == pytest.approx(0.0001 * 0.5)
    assert quantile(_hist(b41=3), 0.5) == LATENCY_BOUNDS[-1]
    assert quantile(_hist(b0=1, b41=99), 0.99) == LATENCY_BOUNDS[-1]


def test_quantile_of_empty_histogram_is_none() -> None:
    assert quantile([0] * N_BUCKETS, 0.5) is None
    assert quantile([], 0.99) is None


# -- counts and rates -----------------------------------------------------------------------


def test_counts_and_rates_in_each_view_by_hand() -> None:
    w = RollingWindow(0.0)
    w.add(0.5, processed=10)  # slot 0
    w.add(5.2, processed=20, errors=5)  # slot 5
    w.add(30.0, processed=30, messages=6, nbytes=600)  # slot 30

    # t = 30.5, slot 30 in progress.
    v10 = w.view(30.5, 10)  # slots 21..30 -> only the t=30 event; span 30.5 - 21
    assert (v10.window_seconds, v10.processed, v10.errors, v10.messages) == (10, 30, 0, 6)
    assert v10.span_seconds == pytest.approx(9.5)
    assert v10.items_per_second == pytest.approx(30 / 9.5)
    assert v10.message_rate == pytest.approx(6 / 9.5)
    assert v10.error_rate == 0.0

    v60 = w.view(30.5, 60)  # slots -29..30, but the window started at 0: span 30.5
    assert (v60.processed, v60.errors, v60.messages, v60.bytes) == (60, 5, 6, 600)
    assert v60.span_seconds == pytest.approx(30.5)
    assert v60.items_per_second == pytest.approx(60 / 30.5)
    assert v60.error_rate == pytest.approx(5 / 65)

    v300 = w.view(30.5, 300)
    assert (v300.processed, v300.errors) == (60, 5)
    assert v300.span_seconds == pytest.approx(30.5)

    # t = 65.0: the 60 s view is slots 6..65, so slots 0 and 5 have left it.
    v60 = w.view(65.0, 60)
    assert (v60.processed, v60.errors, v60.messages) == (30, 0, 6)
    assert v60.span_seconds == pytest.approx(59.0)
    assert v60.items_per_second == pytest.approx(30 / 59)
    assert v60.error_rate == 0.0
    v10 = w.view(65.0, 10)
    assert (v10.processed, v10.items_per_second, v10.message_rate) == (0, 0.0, 0.0)
    v300 = w.view(65.0, 300)  # periods 0..6 -> everything, span 65
    assert (v300.processed, v300.errors, v300.messages) == (60, 5, 6)
    assert v300.items_per_second == pytest.approx(60 / 65)
    assert v300.error_rate == pytest.approx(5 / 65)

    assert w.totals() == (60, 5, 6, 600, 0, 0.0)


@pytest.mark.parametrize(
    ("seconds", "last_in", "first_out"),
    [
        (10, 9.999, 10.0),  # slot 0 + 9 completed: slot 0 leaves when slot 10 starts
        (60, 59.5, 60.0),  # slot 0 + 59 completed
        (300, 299.999, 300.0),  # 10 s period 0 + 29 completed periods
    ],
)
def test_burst_at_zero_expires_exactly_on_the_slot_boundary(
    seconds: int, last_in: float, first_out: float
) -> None:
    w = RollingWindow(0.0)
    w.add(0.0, processed=100, latency=0.010)
    v = w.view(last_in, seconds)  # type: ignore[arg-type]
    assert v.processed == 100
    assert v.latency_count == 1  # one latency observation for the burst
    assert v.p50 is not None
    v = w.view(first_out, seconds)  # type: ignore[arg-type]
    assert (v.processed, v.latency_count, v.items_per_second) == (0, 0, 0.0)
    assert (v.p50, v.p95, v.p99) == (None, None, None)  # count and quantiles expire together
    v = w.view(first_out + 10, seconds)  # type: ignore[arg-type]
    assert v.processed == 0
    assert w.totals()[0] == 100


def test_60s_view_at_70s_excludes_burst_at_zero() -> None:
    w = RollingWindow(0.0)
    w.add(0.0, processed=100)
    assert w.view(59.5).processed == 100
    assert w.view(60.0).processed == 0
    assert w.view(70.0).processed == 0


def test_300s_view_has_ten_second_precision() -> None:
    # t=5.5 is in period 0 (0..10 s): it leaves the 300 s view when period 30 starts,
    # i.e. at t=300, only 294.5 s after it happened.
    w = RollingWindow(0.0)
    w.add(5.5, processed=7)
    v = w.view(299.99, 300)
    assert v.processed == 7
    assert v.span_seconds == pytest.approx(299.99)
    assert w.view(300.0, 300).processed == 0
    # t=9.99 is still period 0, t=10.0 is period 1 and stays until t=310
    w = RollingWindow(0.0)
    w.add(10.0, processed=3)
    assert w.view(300.0, 300).processed == 3
    assert w.view(300.0, 300).span_seconds == pytest.approx(290.0)  # periods 1..30 from t=10
    assert w.view(309.9, 300).processed == 3
    assert w.view(310.0, 300).processed == 0


def test_burst_70s_ago_is_out_of_60s_rate_but_in_300s_view() -> None:
    w = RollingWindow(0.0)
    w.add(10.0, processed=50, latency=0.5)
    v60 = w.view(80.0, 60)
    assert (v60.processed, v60.items_per_second, v60.p99) == (0, 0.0, None)
    v300 = w.view(80.0, 300)
    assert v300.processed == 50
    assert v300.items_per_second == pytest.approx(50 / 80)
    # one latency: its bucket (0.4096, 0.579261875] is clamped to [0.5, 0.5] (0.5 is a
    # float32, so the stored extremes are exact)
    assert v300.p50 == 0.5


def test_late_event_counts_in_the_slot_in_progress() -> None:
    w = RollingWindow(0.0)
    w.add(10.0, processed=1)
    w.add(5.0, processed=2)  # arrives "from the past": folded into slot 10, not slot 5
    assert w.view(9.0, 10).processed == 3  # a read "from the past" sees the slot in progress
    assert w.view(65.5).processed == 3  # slot 5 is out of the 60 s view, slot 10 is not
    assert w.view(70.0).processed == 0


# -- quantiles over a view ------------------------------------------------------------------


def test_view_quantiles_against_bucket_bounds() -> None:
    w = RollingWindow(0.0)
    for i in range(90):
        w.add(i * 0.3, processed=1, latency=0.010)  # bucket 14, spread over slots 0..26
    for i in range(10):
        w.add(30.0 + i, errors=1, latency=0.5)  # bucket 25
    v = w.view(40.0, 60)
    assert (v.processed, v.errors, v.latency_count) == (90, 10, 100)
    assert v.latency_sum == pytest.approx(90 * 0.010 + 10 * 0.5)
    assert v.error_rate == pytest.approx(0.1)
    # The view's extremes are 0.010 (kept as the float32 at or below it) and 0.5, so
    # bucket 14 is interpolated from 0.010 up to its bound and bucket 25 from its lower
    # bound up to 0.5.
    lo = _F32_BELOW_10MS
    assert v.p50 == pytest.approx(lo + (0.0128 - lo) * 50 / 90, rel=1e-12)
    assert LATENCY_BOUNDS[13] < v.p50 <= LATENCY_BOUNDS[14]  # type: ignore[operator]
    assert v.p95 == pytest.approx(0.4096 + (0.5 - 0.4096) * 0.5)
    assert v.p99 == pytest.approx(0.4096 + (0.5 - 0.4096) * 0.9)
    assert LATENCY_BOUNDS[24] < v.p99 <= LATENCY_BOUNDS[25]  # type: ignore[operator]
    # 10 s view at t=40: slots 31..40 -> 9 of the 0.5 s errors (t=31..39), all 0.5
    v10 = w.view(40.0, 10)
    assert (v10.errors, v10.latency_count) == (9, 9)
    assert v10.p50 == 0.5
    # at t=87 slots 28..87: the t=0..26.7 ones have gone, the t=30..39 ones remain
    v = w.view(87.0, 60)
    assert (v.latency_count, v.processed, v.errors) == (10, 0, 10)
    assert v.error_rate == 1.0
    assert v.p50 == 0.5


def test_empty_views_give_rate_zero_and_no_quantiles() -> None:
    w = RollingWindow(0.0)
    for s in VIEWS:
        v = w.view(5.0, s)
        assert (v.processed, v.errors, v.messages, v.bytes, v.latency_count) == (0, 0, 0, 0, 0)
        assert (v.items_per_second, v.message_rate, v.error_rate) == (0.0, 0.0, 0.0)
        assert (v.p50, v.p95, v.p99) == (None, None, None)
    # counts without latencies: rates but no quantiles
    w.add(6.0, processed=4)
    v = w.view(6.5)
    assert v.processed == 4
    assert (v.p50, v.p95, v.p99) == (None, None, None)


def test_expired_latency_sum_is_exactly_zero() -> None:
    w = RollingWindow(0.0)
    for i, x in enumerate([0.1, 0.2, 0.3, 0.7, 0.01]):  # 0.1 + 0.2 + 0.3 - 0.1 - ... != 0.0
        w.add(float(i), latency=x)
    assert w.view(5.5).latency_sum == pytest.approx(1.31)
    v = w.view(100.0)
    assert (v.latency_count, v.latency_sum) == (0, 0.0)
    assert w.view(100.0, 10).latency_sum == 0.0


# -- idle gaps ------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [300.0, 360.0, 361.0, 400.0, 10_000.0])
def test_long_idle_gap_empties_views_but_keeps_lifetime_totals(gap: float) -> None:
    w = RollingWindow(0.0)
    w.add(1.0, processed=5, errors=1, messages=2, nbytes=10, latency=0.010)
    w.add(2.0, processed=1, latency=0.5)
    t = 2.0 + gap
    for s in VIEWS:
        v = w.view(t, s)
        assert (v.processed, v.errors, v.messages, v.bytes, v.latency_count) == (0, 0, 0, 0, 0)
        assert v.p50 is None
    assert w.totals()[:5] == (6, 1, 2, 10, 2)
    assert w.totals()[5] == pytest.approx(0.51)
    # the window works as new after the gap
    w.add(t, processed=3)
    assert w.view(t + 0.5).processed == 3
    assert w.view(t + 0.5, 300).processed == 3
    assert w.view(t + 60).processed == 0
    assert w.totals()[0] == 9
    hist = w.total_histogram()
    assert sum(hist) == 2
    assert hist[14] == 1
    assert hist[25] == 1


def test_gap_with_unread_slot_in_progress_keeps_it_in_totals() -> None:
    # the slot in progress when a > 360 s gap is crossed by add() must not be lost
    w = RollingWindow(0.0)
    w.add(0.2, processed=2, latency=0.010)
    w.add(1000.0, processed=1)
    assert w.totals()[:5] == (3, 0, 0, 0, 1)
    assert w.total_histogram()[14] == 1
    assert w.view(1000.5).processed == 1


# -- add_histogram --------------------------------------------------------------------------


def _fold_histogram(w: RollingWindow, t: float, lat: list[float]) -> None:
    counts = [0] * N_BUCKETS
    for x in lat:
        counts[bucket_index(x)] += 1
    w.add_histogram(t, counts, sum(lat), min(lat), max(lat))


def _fold_counts(w: RollingWindow, t: float, lat: list[float]) -> None:
    """A run of bucket counts from ``first`` on."""
    ks = [bucket_index(x) for x in lat]
    first = min(ks)
    counts = [0] * (max(ks) - first + 1)
    for k in ks:
        counts[k - first] += 1
    w.add_counts(t, first, counts, sum(lat), min(lat), max(lat))


@pytest.mark.parametrize(
    ("fold", "seed"),
    [(_fold_histogram, 7), (_fold_counts, 11)],
    ids=["add_histogram", "add_counts"],
)
def test_batched_latencies_fold_as_they_would_one_by_one(
    fold: Callable[[RollingWindow, float, list[float]], None], seed: int
) -> None:
    rng = random.Random(seed)
    per_event = RollingWindow(0.0)
    batched = RollingWindow(0.0)
    t = 0.0
    for _ in range(80):
        t += rng.uniform(0.0, 4.0)
        lat = [rng.lognormvariate(-4, 2) for _ in range(rng.randint(1, 20))]
        for x in lat:
            per_event.add(t, latency=x)
        fold(batched, t, lat)
        for s in VIEWS:
            a, b = per_event.view(t + 0.1, s), batched.view(t + 0.1, s)
            assert a.latency_count == b.latency_count
            assert (a.p50, a.p95, a.p99) == (b.p50, b.p95, b.p99)
            assert a.latency_sum == pytest.approx(b.latency_sum)
    assert per_event.total_histogram() == batched.total_histogram()
    assert per_event.totals()[4] == batched.totals()[4]


def test_add_histogram_rejects_wrong_length() -> None:
    w = RollingWindow(0.0)
    with pytest.raises(ValueError, match="42"):
        w.add_histogram(0.0, [1, 2, 3], 0.1)


@pytest.mark.parametrize(("first", "counts"), [(-1, [1]), (N_BUCKETS - 1, [1, 1]), (0, [0] * 43)])
def test_add_counts_rejects_buckets_outside_the_histogram(first: int, counts: list[int]) -> None:
    w = RollingWindow(0.0)
    with pytest.raises(ValueError, match=f"not within 0..{N_BUCKETS - 1}"):
        w.add_counts(0.0, first, counts, 0.1)
    assert w.totals()[4] == 0 and w.total_histogram() == [0] * N_BUCKETS


# -- bounded memory, young windows, argument checks ------------------------------------------


def test_memory_does_not_grow_with_event_count() -> None:
    w = RollingWindow(0.0)

    def sizes() -> tuple[int, ...]:
        return (len(w._fo), len(w._fn), len(w._fh), len(w._co), len(w._cn), len(w._ch))

    assert sizes() == (60, 0, 0, 30, 0, 0)  # rings are allocated by their first slot
    add = w.add
    n = 1_000_000
    for i in range(n):  # 500 s of traffic at 2000 events/s
        add(i * 0.0005, 1, 0, 0, 0, 0.001)
        if i == 40_000:  # 20 s in: both rings hold slots
            before = sizes()
            assert before[2] == 60 * N_BUCKETS and before[5] == 30 * N_BUCKETS
    assert sizes() == before
    assert w.totals()[0] == n
    assert sum(w.total_histogram()) == n
    # t=499.9995 is the last event; the 60 s view is slots 440..499: 60 s * 2000 events
    assert w.view(499.9995).processed == 120_000
    assert w.view(499.9995, 10).processed == 20_000
    # 300 s view: periods 20..49 -> t in [200, 500): 600_000 events
    assert w.view(499.9995, 300).processed == 600_000


def test_span_seconds_while_the_window_is_young() -> None:
    w = RollingWindow(100.25)
    for s in VIEWS:
        assert w.view(100.25, s).span_seconds == 1.0  # never below one resolution step
    w.add(101.0, processed=7)
    for s in VIEWS:
        v = w.view(103.75, s)
        assert v.span_seconds == pytest.approx(3.5)
        assert v.items_per_second == pytest.approx(7 / 3.5)
    # Slots 121..130 hold nothing and the window is older than them: an empty view of a
    # mature window covers its whole length (so an idle component's figures stay the same
    # from tick to tick, and a reader may keep them).
    assert w.view(130.0, 10).span_seconds == 10.0
    assert w.view(130.0, 60).span_seconds == pytest.approx(29.75)
    assert w.view(130.0, 300).span_seconds == pytest.approx(29.75)
    # t=400.5: period 40, so periods 11..40, from t=110; with something in them the span is
    # what they cover
    w.add(400.5, processed=1)
    assert w.view(400.5, 300).span_seconds == pytest.approx(290.5)
    assert w.view(400.5, 60).span_seconds == pytest.approx(59.5)
    assert w.view(700.0, 300).span_seconds == 300.0  # empty again, and mature


def test_an_idle_window_reads_the_same_until_something_is_added() -> None:
    w = RollingWindow(0.0)
    w.add(5.0, processed=3, latency=0.01)
    assert not w.idle(100.0)  # still in the 300 s view
    assert not RollingWindow(0.0).idle(200.0)  # younger than its longest view
    assert w.idle(320.0)
    views = [w.view(320.0, s) for s in VIEWS]
    assert [w.view(987.6, s) for s in VIEWS] == views  # nothing moves while idle
    assert views[2].span_seconds == 300.0 and views[2].p99 is None
    w.add(990.0, processed=1)
    assert not w.idle(990.5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resolution"):
        RollingWindow(0.0, resolution=0)
    w = RollingWindow(0.0)
    with pytest.raises(ValueError, match="10, 60 or 300"):
        w.view(1.0, 30)  # type: ignore[arg-type]


# -- against a naive reference model ---------------------------------------------------------


def _reference(
    events: list[tuple[int, int, int, float | None]], tick: int, seconds: int
) -> tuple[int, int, list[int], list[float]]:
    first = (tick // 10 - 29) * 10 if seconds == 300 else tick - (seconds - 1)
    p = e = 0
    hist = [0] * N_BUCKETS
    lats: list[float] = []
    for t, dp, de, lat in events:
        if first <= t <= tick:
            p += dp
            e += de
            if lat is not None:
                hist[bucket_index(lat)] += 1
                lats.append(lat)
    return p, e, hist, lats


def test_matches_naive_reference_over_random_traffic() -> None:
    rng = random.Random(20240601)
    w = RollingWindow(0.0)
    events: list[tuple[int, int, int, float | None]] = []
    t = 0.0
    tick = 0  # the slot in progress: the largest tick seen so far
    for step in range(3000):
        r = rng.random()
        if r < 0.01:
            t += rng.uniform(300, 400)  # long idle gap, around the reset threshold
        elif r < 0.05:
            t += rng.uniform(10, 70)
        else:
            t += rng.uniform(0, 1.5)
        now = t - (rng.uniform(0, 3) if rng.random() < 0.05 else 0.0)  # some late events
        tick = max(tick, int(now))
        dp, de = rng.randint(0, 5), rng.randint(0, 2)
        lat = rng.lognormvariate(-3, 1.5) if rng.random() < 0.7 else None
        w.add(now, processed=dp, errors=de, latency=lat)
        events.append((tick, dp, de, lat))
        if step % 7 == 0:
            read = t + rng.uniform(0, 20)
            tick = max(tick, int(read))
            for s in VIEWS:
                v = w.view(read, s)  # type: ignore[arg-type]
                p, e, hist, lats = _reference(events, tick, s)
                assert (v.processed, v.errors) == (p, e), (step, s)
                assert v.latency_count == sum(hist)
                # clamped to the view's extremes; the window keeps those of completed
                # slots as float32 rounded outward, hence not to the last bit
                lo, hi = (min(lats), max(lats)) if lats else (0.0, 0.0)
                want = [quantile(hist, q, lowest=lo, highest=hi) for q in (0.5, 0.95, 0.99)]
                assert [v.p50, v.p95, v.p99] == [
                    pytest.approx(x, rel=1e-6) if x is not None else None for x in want
                ], (step, s)
    total_p = sum(ev[1] for ev in events)
    total_e = sum(ev[2] for ev in events)
    assert w.totals()[:2] == (total_p, total_e)


def test_view_quantiles_match_quantile_of_the_merged_histogram() -> None:
    """A view finds its three quantiles with one cumulative sum and bisect; they must be
    ``quantile``'s own figures for the merged histogram, to the last bit."""
    from streammetrics.windows import _quantiles3

    rng = random.Random(3)
    for _ in range(3000):
        hists: list[list[int] | None] = []
        for _ in range(rng.randrange(1, 4)):
            if rng.random() < 0.2:
                hists.append(None)
                continue
            h = [0] * N_BUCKETS
            for _ in range(rng.randrange(0, 6)):
                h[rng.randrange(N_BUCKETS)] += rng.choice([1, 2, 3, 7, 100])
            hists.append(h)
        present = [h for h in hists if h is not None]
        merged = [sum(c) for c in zip(*present, strict=True)] if present else [0] * N_BUCKETS
        want = (quantile(merged, 0.5), quantile(merged, 0.95), quantile(merged, 0.99))
        assert _quantiles3(hists) == want


def test_a_window_that_never_times_anything_keeps_no_histogram_ring() -> None:
    """A stream's window counts messages only: its histogram rings are never made."""
    w = RollingWindow(0.0)
    for t in range(400):
        w.add(t + 0.5, messages=3, nbytes=10)
    assert (len(w._fh), len(w._ch)) == (0, 0)
    v = w.view(400.0, 300)
    assert v.messages == 3 * round(v.span_seconds)  # three a second, over what it covers


def test_counts_widen_their_ring_and_stay_exact() -> None:
    """Slots are kept in the narrowest integer type; a count that does not fit widens
    the ring (bytes, then 16, 32, 64 bits) and every count stays exact."""
    w = RollingWindow(0.0)
    assert w._fh.typecode == "B"
    big = [0] * N_BUCKETS
    big[3] = 300  # past a byte
    big[5] = 70_000  # past 16 bits
    big[-1] = 5_000_000_000  # past 32 bits
    w.add_histogram(0.5, big, 1.0)
    w.add(0.5, processed=2**40, nbytes=3 * 2**33)
    w.add(1.5, processed=1, latency=0.001)  # completes slot 0
    assert w._fh.typecode == "Q"
    v = w.view(1.5, 10)
    assert v.processed == 2**40 + 1
    assert v.bytes == 3 * 2**33
    assert v.latency_count == 300 + 70_000 + 5_000_000_000 + 1
    assert w.total_histogram()[5] == 70_000
    w.view(11.5, 10)  # slot 0 leaves the 10 s view: subtracted exactly
    assert w.view(11.5, 10).processed == 0
    assert w.view(11.5, 60).processed == 2**40 + 1


def test_a_window_with_traffic_in_every_slot_stays_small() -> None:
    """Ninety slots of counts and histograms in flat arrays: a window with latencies in
    every slot of every view stays near 10 KB (a list per slot cost ~57 KB)."""
    import gc
    import random
    import tracemalloc

    rng = random.Random(7)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        windows = []
        for _ in range(50):
            w = RollingWindow(0.0)
            for t in range(400):
                for j in range(5):
                    w.add(t + 0.1 * j, 1, 0, 0, 100, rng.lognormvariate(-5, 1))
            for s in VIEWS:
                w.view(400.0, s)
            windows.append(w)
        gc.collect()
        per_window = (tracemalloc.get_traced_memory()[0] - base) / len(windows)
    finally:
        tracemalloc.stop()
    assert per_window < 12_000, per_window


def test_a_busy_window_holds_few_containers_for_the_garbage_collector() -> None:
    """A full collection walks every container a window holds, for every component: with
    traffic in every slot of every view, a window holds at most its ten arrays, the one
    list of its running vectors and the histogram of its slot in progress (the running
    vectors and histogram sums were eleven objects of their own), and reads the same."""
    import gc

    w = RollingWindow(0.0)
    rng = random.Random(11)
    for t in range(400):
        w.add(t + 0.5, 1, 0, 0, 100, rng.lognormvariate(-5, 1))
    views = w.views(399.7)  # its slot in progress holds the event at 399.5
    # its own containers (its class and the bucket bounds are shared by every window)
    shared = (RollingWindow, w.bounds)
    held = [o for o in gc.get_referents(w) if gc.is_tracked(o) and not any(o is x for x in shared)]
    assert len(held) <= 12, sorted(type(o).__name__ for o in held)
    assert sum(isinstance(o, list) for o in held) == 2  # running vectors; slot in progress
    assert [v.processed for v in views] == [10, 60, 300]
    assert w.totals()[0] == 400
    assert w.views(399.7) == views


def test_a_busy_window_counts_every_slot_in_one_histogram_list() -> None:
    """The histogram of the slot in progress is the window's one list, zeroed and taken
    up again by the next timed slot: a new one per slot would be a new container every
    second for every busy component, each one more for a full collection to walk (and
    one the collector's freeze would not hold). Its slots still read as before."""
    import gc

    w = RollingWindow(0.0)
    held: list[list[int]] = []  # kept alive, so that no address is used twice
    for t in range(30):
        w.add(t + 0.5, 1, 0, 0, 0, 0.001 * (t + 1))  # 1 ms, 2 ms, ... 30 ms
        lists = [o for o in gc.get_referents(w) if type(o) is list and len(o) == N_BUCKETS]
        assert len(lists) == 1
        held.append(lists[0])
    assert all(h is held[0] for h in held)
    views = w.views(29.9)
    assert [v.processed for v in views] == [10, 30, 30]
    # the last ten seconds hold 21 .. 30 ms only: a slot that kept counts of the one
    # before would pull these down
    assert views[0].p50 is not None and 0.021 <= views[0].p50 <= 0.030
    assert views[0].p99 is not None and views[0].p99 <= 0.030
    assert sum(w.total_histogram()) == 30


# -- quantiles clamped to the observed extremes ----------------------------------------------


def _f32(x: float) -> float:
    from array import array

    return array("f", (x,))[0]


def test_a_constant_latency_reads_as_itself_in_every_view() -> None:
    """10.3 ms lands in the √2 bucket (0.009050967, 0.0128]: unclamped, every quantile
    read somewhere across that bucket; clamped to [10.3 ms, 10.3 ms] it is 10.3 ms."""
    w = RollingWindow(0.0)
    for i in range(50):
        w.add(0.01 * i, processed=1, latency=0.0103)
    for s in VIEWS:  # the slot in progress keeps its extremes exact
        v = w.view(0.9, s)
        assert (v.p50, v.p95, v.p99) == (0.0103, 0.0103, 0.0103)
    # completed slots keep them as float32, rounded outward: within one float32 step
    below, above = 0.01029999926686287, 0.010300000198185444
    assert _f32(below) == below < 0.0103 < above == _f32(above)
    for s in VIEWS:
        v = w.view(25.0, s) if s != 10 else w.view(5.0, s)
        for q in (v.p50, v.p95, v.p99):
            assert q is not None and below <= q <= above
    # a latency that is a float32 reads back exactly from completed slots too
    w = RollingWindow(0.0)
    exact = _f32(0.0103)
    for t in range(30):
        w.add(t + 0.5, processed=1, latency=exact)
    for s in VIEWS:
        v = w.view(30.5, s)
        assert (v.p50, v.p95, v.p99) == (exact, exact, exact)


def test_a_narrow_uniform_stream_reads_inside_what_it_had() -> None:
    """Every value of U(10 ms, 11 ms) falls in the ladder bucket (0.01, 0.0128] (the
    default ladder holds the exported 10 ms boundary): unclamped the median read 11.4 ms;
    clamped to [min, max] it is within a few tenths of a percent of the true one."""
    from streammetrics.buckets import DEFAULT_LADDER

    rng = random.Random(11)
    xs = [rng.uniform(0.010, 0.011) for _ in range(5000)]
    w = RollingWindow(0.0, bounds=DEFAULT_LADDER.bounds)
    for i, x in enumerate(xs):
        w.add(i * 0.01, processed=1, latency=x)  # over 50 slots
    v = w.view(50.0, 60)
    exact = sorted(xs)
    lo, hi = exact[0], exact[-1]
    unclamped = quantile(w.total_histogram(), 0.5, DEFAULT_LADDER.bounds)
    assert unclamped is not None and unclamped > 0.0113  # what it read before
    for q, got in ((0.5, v.p50), (0.95, v.p95), (0.99, v.p99)):
        want = exact[int(q * len(xs))]
        assert got is not None and _f32(lo) - 1e-9 <= got <= hi + 1e-9
        assert abs(got - want) / want < 0.005, (q, got, want)


def test_extremes_leave_with_their_slot() -> None:
    """A slot's min and max belong to the views that hold it: when it leaves a view, the
    view's clamp is the extremes of the slots that remain."""
    b14_lower = 0.009050967  # 10.3 ms is in the √2 bucket (0.009050967, 0.0128]
    w = RollingWindow(0.0)
    w.add(0.5, processed=1, latency=0.0005)  # slots 0 and 1: the smallest
    w.add(1.5, processed=1, latency=0.0005)
    w.add(30.5, processed=1, latency=0.0103)
    # p99 (rank 2.97) is in bucket 14, which holds 10.3 ms only: clamped above to it,
    # and below by nothing while the 0.5 ms ones are in the view
    with_low = b14_lower + (0.0103 - b14_lower) * 0.97
    assert w.view(31.0, 60).p99 == pytest.approx(with_low, rel=1e-6)
    # t = 62: the 60 s view holds slots 3..62, so the smallest have left it
    v = w.view(62.0, 60)
    assert v.latency_count == 1 and v.p99 == pytest.approx(0.0103, rel=1e-6)
    # the 300 s view still holds them in its first ten-second slot ...
    v = w.view(62.0, 300)
    assert v.latency_count == 3 and v.p99 == pytest.approx(with_low, rel=1e-6)
    # ... until t = 300 (it then starts at t = 10)
    v = w.view(301.0, 300)
    assert v.latency_count == 1 and v.p99 == pytest.approx(0.0103, rel=1e-6)

    w = RollingWindow(0.0)
    w.add(20.5, processed=1, latency=0.5)  # slot 20: the largest
    w.add(23.5, processed=1, latency=0.0103)
    w.add(24.5, processed=1, latency=0.0103)
    # p50 (rank 1.5) is in bucket 14 (two of 10.3 ms): clamped below to 10.3 ms, above
    # by nothing while the 0.5 s one is in the view
    with_high = 0.0103 + (0.0128 - 0.0103) * 0.75
    assert w.view(25.0, 10).p50 == pytest.approx(with_high, rel=1e-6)
    # t = 30: the 10 s view holds slots 21..30: the largest has left it, not the 60 s one
    v = w.view(30.0, 10)
    assert v.latency_count == 2 and v.p50 == pytest.approx(0.0103, rel=1e-6)
    assert w.view(30.0, 60).p50 == pytest.approx(with_high, rel=1e-6)
    assert w.view(81.0, 60).p50 == pytest.approx(0.0103, rel=1e-6)  # slots 22..81


def test_a_merged_view_takes_the_extremes_of_all_its_parts() -> None:
    """The 300 s view merges the completed ten-second slots, the ten-second slot in
    progress and the second in progress: its min and max are those of the union."""
    w = RollingWindow(0.0)
    assert bucket_index(0.21) == bucket_index(0.25) == bucket_index(0.28) == 23
    w.add(5.5, processed=1, latency=0.21)  # a completed ten-second slot (from t = 10)
    w.add(101.5, processed=1, latency=0.25)  # the ten-second slot in progress
    w.add(102.5, processed=1, latency=0.28)  # the second in progress
    v = w.view(102.9, 300)
    assert v.latency_count == 3
    # all three in bucket 23 (0.2048, 0.2896]: clamped to [0.21, 0.28]
    assert v.p50 == pytest.approx(0.21 + 0.07 * 0.5, rel=1e-6)
    assert v.p99 == pytest.approx(0.21 + 0.07 * 0.99, rel=1e-6)
    # the 60 s and 10 s views hold the last two only: [0.25, 0.28]
    for s in (10, 60):
        v = w.view(102.9, s)  # type: ignore[arg-type]
        assert v.latency_count == 2
        assert v.p50 == pytest.approx(0.25 + 0.03 * 0.5, rel=1e-6)


def test_untimed_slots_do_not_widen_the_clamp() -> None:
    """Slots that counted items without latencies, and empty ones, hold no extremes."""
    w = RollingWindow(0.0)
    for t in range(40):
        if t % 3 == 0:
            w.add(t + 0.5, processed=1, latency=0.0103)
        else:
            w.add(t + 0.5, processed=5, errors=1, nbytes=10)  # counted, not timed
    for s in VIEWS:
        v = w.view(40.5, s)
        assert (v.p50, v.p99) == (pytest.approx(0.0103, rel=1e-6),) * 2


def test_a_histogram_without_extremes_leaves_its_views_unclamped() -> None:
    """A probe's delta carries buckets, not values: a view holding one reads whole
    buckets (as before the clamp), and so does every view of a window with it in."""
    counts = [0] * N_BUCKETS
    counts[14] = 4  # (0.009050967, 0.0128]
    w = RollingWindow(0.0)
    w.add_histogram(0.5, counts, 4 * 0.0103)
    w.add(1.5, processed=1, latency=0.0103)  # a timed value with its extremes
    v = w.view(2.0, 60)
    h = w.total_histogram()
    assert v.p50 == quantile(h, 0.5)  # unclamped, to the last bit
    assert v.p50 == pytest.approx(0.009050967 + (0.0128 - 0.009050967) * 2.5 / 5)
    # given its extremes, it is clamped like values folded one by one
    w = RollingWindow(0.0)
    w.add_histogram(0.5, counts, 4 * 0.0103, 0.0103, 0.0103)
    assert w.view(0.9, 60).p50 == 0.0103
    # an all-zero histogram folds nothing, so it does not unclamp either
    w.add_histogram(0.6, [0] * N_BUCKETS, 0.0)
    assert w.view(0.9, 60).p50 == 0.0103


def test_a_window_that_never_times_anything_keeps_no_extremes() -> None:
    w = RollingWindow(0.0)
    for t in range(400):
        w.add(t + 0.5, processed=2, messages=3, nbytes=10)
    assert (len(w._fx), len(w._cx), len(w._vx)) == (0, 0, 0)
    w.add(400.5, processed=1, latency=0.001)
    w.view(402.0, 60)
    assert (len(w._fx), w._fx.typecode, len(w._cx)) == (120, "f", 0)  # 60 slots, lo and hi
    w.view(420.0, 300)
    assert (len(w._cx), w._cx.typecode) == (60, "f")


def test_widened_counts_leave_the_extremes_alone() -> None:
    """Counts widen their own ring; the extremes ring stays float32 and exact."""
    w = RollingWindow(0.0)
    big = [0] * N_BUCKETS
    big[14] = 5_000_000_000  # past 32 bits: the histogram ring becomes 64-bit
    w.add_histogram(0.5, big, 0.0103 * 5_000_000_000, 0.0103, 0.0103)
    w.add(1.5, processed=1, latency=0.0103)
    v = w.view(1.6, 10)
    assert w._fh.typecode == "Q" and w._fx.typecode == "f" and len(w._fx) == 120
    assert v.latency_count == 5_000_000_001
    assert v.p50 == pytest.approx(0.0103, rel=1e-6)


@pytest.mark.parametrize("bound", [b for b in LATENCY_BOUNDS[:-1]] + [0.01, 0.005, 0.25])
def test_float32_extremes_never_move_a_clamp_out_of_its_bucket(bound: float) -> None:
    """A latency on a bucket bound, and just either side of it: float32 rounding of its
    stored extremes must keep every quantile inside the bucket the latency is in, and
    within a float32 step of it."""
    import math

    from streammetrics.buckets import DEFAULT_LADDER

    bounds = DEFAULT_LADDER.bounds
    for x in (math.nextafter(bound, 0.0), bound, math.nextafter(bound, math.inf)):
        w = RollingWindow(0.0, bounds=bounds)
        w.add(0.5, processed=1, latency=x)
        w.add(0.6, processed=1, latency=x)
        v = w.view(1.5, 60)  # slot 0 completed: its extremes are float32 now
        i = bucket_index(x, bounds)
        lower, upper = (bounds[i - 1] if i else 0.0), bounds[i]
        for q in (v.p50, v.p95, v.p99):
            assert q is not None and lower <= q <= upper, (x, q, lower, upper)
            assert abs(q - x) <= x * 2**-22, (x, q)


def test_float32_rounding_is_outward() -> None:
    from array import array

    from streammetrics.windows import _f32_toward

    rng = random.Random(5)
    values = [rng.lognormvariate(-5, 3) for _ in range(2000)] + [0.0, 1e-300, 86400.0, 1e39]
    for x in values:
        down, up = _f32_toward(x, False), _f32_toward(x, True)
        assert down <= x <= up
        assert array("f", (down, up)).tolist() == [down, up]  # both float32
        if 1e-30 < x < 1e30:
            assert up - down <= x * 2**-21
