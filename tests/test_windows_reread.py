"""RollingWindow.read_views: a read that follows one of its own works out only what moves
with the clock while nothing entered or left a view, and gives exactly what a window fed
the same and read afresh gives."""

from __future__ import annotations

import random

import msgspec
import pytest

from streammetrics.windows import N_BUCKETS, RollingWindow, Views, WindowStats


def _feed(windows: list[RollingWindow], rng: random.Random, now: float) -> None:
    """One fold of a random kind, the same into every window."""
    kind = rng.randrange(5)
    lat = rng.lognormvariate(-5, 1.2)
    for w in windows:
        if kind == 0:
            w.add(now, processed=rng.randrange(1, 4), latency=lat)
        elif kind == 1:
            w.add(now, errors=1, messages=2, nbytes=100)
        elif kind == 2:
            w.add_bucket(now, 7, lat)
        elif kind == 3:
            w.add_counts(now, 3, [1, 0, 2], 0.02, lowest=0.001, highest=0.003)
        else:
            w.add_histogram(now, [0] * (N_BUCKETS - 1) + [1], 9.0)  # no extremes: unclamped
    # the same random draws for every window: re-seeded per window would differ


def _fields(v: WindowStats) -> tuple[object, ...]:
    return msgspec.structs.astuple(v)


@pytest.mark.parametrize("seed", range(6))
def test_a_reread_window_reads_as_one_read_afresh(seed: int) -> None:
    """Two windows fed alike: one read with ``read_views`` after each of its own reads,
    the other with ``views``. Sparse traffic (most reads find nothing new), gaps that
    take slots out of the 10 s, 60 s and 300 s views, coarse slots completing, gaps past
    the whole window, reads in the middle of a slot and on its boundary."""
    rng = random.Random(seed)
    kept, fresh = RollingWindow(1000.25), RollingWindow(1000.25)
    last: Views | None = None
    now, reused, reads = 1000.25, 0, 0
    for _ in range(1500):
        r = rng.random()
        if r < 0.15:
            # feed both with the same draws
            state = rng.getstate()
            _feed([kept], rng, now)
            rng.setstate(state)
            _feed([fresh], rng, now)
        else:
            before = last
            last = kept.read_views(now, last)
            reads += 1
            assert [_fields(v) for v in last[1:]] == [_fields(v) for v in fresh.views(now)]
            if before is not None and before[0] == last[0] and before[2].p50 is not None:
                # nothing entered or left: the quantiles are the kept ones, not worked out
                assert last[2].p50 is before[2].p50
                reused += 1
        step = rng.random()
        if step < 0.6:
            now += rng.choice((0.25, 0.5, 1.0, 0.75))
        elif step < 0.9:
            now += rng.choice((3.0, 9.0, 10.0, 11.0, 59.0, 61.0))
        elif step < 0.98:
            now += rng.choice((120.0, 290.0, 301.0))
        else:
            now += rng.choice((900.0, 1000.0))  # past the window: it starts over
    assert reads > 1000 and reused > 100  # the shortcut was taken, and often


def test_a_reread_takes_in_what_was_folded_since() -> None:
    w = RollingWindow(0.0)
    w.add(5.5, processed=2, latency=0.01)
    first = w.read_views(5.6)
    again = w.read_views(5.9, first)
    assert again[0] == first[0]  # nothing new: the same contents, a later span
    assert again[2].processed == 2 and again[2].span_seconds == pytest.approx(5.9)
    assert again[2].items_per_second == pytest.approx(2 / 5.9)
    w.add(6.0, processed=1, latency=0.5)
    after = w.read_views(6.1, again)
    assert after[0] != again[0]
    assert after[2].processed == 3 and after[2].p99 is not None
    assert after[2].p99 > again[2].p99  # type: ignore[operator]


def test_a_view_whose_slots_leave_is_read_anew() -> None:
    w = RollingWindow(0.0)
    w.add(400.5, processed=1, latency=0.01)
    first = w.read_views(400.6)
    assert first[1].processed == 1
    later = w.read_views(411.0, first)  # the slot left the 10 s view
    assert later[0] != first[0]
    assert later[1].processed == 0 and later[1].p50 is None and later[1].span_seconds == 10.0
    assert later[2].processed == 1 and later[2].p50 == pytest.approx(first[2].p50, rel=1e-6)


def test_an_empty_mature_view_is_the_same_object_again() -> None:
    w = RollingWindow(0.0)
    w.add(5.0, processed=1)
    first = w.read_views(400.0)
    again = w.read_views(401.5, first)
    assert again[1:] == first[1:] and all(a is b for a, b in zip(again[1:], first[1:], strict=True))
