"""A tick read in steps is still one instant: folds that land between the steps show in
the next read, never in this one, and nothing is lost. Reading only the components that
changed gives what reading all of them gives; quantiles shared between views that hold the
same latencies are the ones each would have computed."""

from __future__ import annotations

import random

import anyio
import msgspec
import pytest

from streammetrics.aggregator import Aggregator
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Delta, Event
from streammetrics.steps import Pace, finish
from streammetrics.views.tick_cache import TickCache
from streammetrics.windows import RollingWindow, _quantiles3
from tests.support.http_app import FakeClock


def _agg(clock: FakeClock, view: int = 60) -> Aggregator:
    return Aggregator(
        clock=clock.monotonic,
        wall=clock.wall,
        max_components=2000,
        view=view,  # type: ignore[arg-type]
    )


def _enc(x: object) -> bytes:
    return msgspec.json.encode(x)


def _seed(agg: Aggregator, n: int) -> None:
    agg.fold_events(
        [
            Event(f"c{i}", "processed", count=i % 7 + 1, latency=0.001 * (i % 40 + 1))
            for i in range(n)
        ]
        + [Event(f"c{i}", "breaker", detail="open") for i in range(0, n, 50)]
    )


def test_folds_between_the_steps_of_a_read_do_not_show_in_it() -> None:
    """Two aggregators with one history; one is read in one piece, the other in steps
    with folds landing between them (into components read and not yet read, a breaker,
    a new component, a probe delta): the two reads are equal, and the next read of the
    second shows every one of those folds."""
    clock = FakeClock()
    whole, stepped = _agg(clock), _agg(clock)
    for agg in (whole, stepped):
        _seed(agg, 600)
    clock.advance(2.5)
    want = whole.figures()
    steps = stepped._figures_steps(None, (), None, Pace(every=50))
    next(steps)  # the first 50 read
    late = [
        Event("c3", "error", detail="late"),  # already read
        Event("c400", "processed", count=1000, latency=9.0),  # not yet read
        Event("c450", "breaker", detail="closed"),  # a breaker not yet read
        Event("new", "processed"),  # not there at the read's instant
    ]
    clock.advance(0.5)
    assert stepped.fold_events(late) == []
    stepped.fold_deltas([Delta("c500", processed=77, messages=3, stream="s")])
    next(steps)
    stepped.fold_events([Event("c599", "heartbeat")])
    got = finish(steps)
    assert _enc(got) == _enc(want)
    assert "new" not in got.detailed_components
    assert got.detailed_components["c400"].items_processed == 400 % 7 + 1
    # Nothing lost: the next read has them all, as the one-piece twin once it folds them.
    whole.fold_events(late)
    whole.fold_deltas([Delta("c500", processed=77, messages=3, stream="s")])
    whole.fold_events([Event("c599", "heartbeat")])
    clock.advance(1)
    after, twin = stepped.figures(), whole.figures()
    assert _enc(after) == _enc(twin)
    assert after.detailed_components["c400"].items_processed == 400 % 7 + 1 + 1000
    assert after.detailed_components["c3"].last_error == "late"
    assert after.circuit_breakers["c450"].state == "closed"
    assert "new" in after.detailed_components


def test_reading_what_changed_gives_what_reading_everything_gives() -> None:
    """One aggregator read every tick on its default view (only what changed is read
    anew), a twin read every tick on a view that is not its default (everything read
    anew, nothing kept): equal figures at every tick, through quiet spells, bursts,
    breakers, heartbeats and probe deltas."""
    rng = random.Random(12)
    clock = FakeClock()
    kept, full = _agg(clock, view=60), _agg(clock, view=10)
    names = [f"c{i}" for i in range(80)]
    reads_kept_figures = 0
    for tick in range(60):
        batch: list[Event] = []
        for name in rng.sample(names, rng.randrange(0, 10)):
            kind = rng.choice(["processed", "processed", "error", "heartbeat", "breaker"])
            if kind == "breaker":
                batch.append(Event(name, kind, detail=rng.choice(["open", "closed"])))
            else:
                batch.append(Event(name, kind, latency=rng.choice([None, 0.002, 0.3, 2.0])))
        deltas = [Delta(rng.choice(names), processed=rng.randrange(5))] if tick % 7 == 3 else []
        for agg in (kept, full):
            agg.fold_events(batch)
            agg.fold_deltas(deltas)
        if tick % 20 == 19:
            clock.advance(330)  # past the 300 s view: every component goes quiet
        before = kept._last
        a, b = kept.figures(), full.figures(view=60)
        assert _enc(a) == _enc(b), tick
        if before is not None:
            same = sum(a.detailed_components[n] is before[0].get(n) for n in a.detailed_components)
            reads_kept_figures += same
        clock.advance(rng.choice([0.3, 1.0, 4.0]))
    assert reads_kept_figures > 0  # the quiet ones really were kept, not read again


def test_quantiles_shared_between_views_are_each_views_own() -> None:
    """Where a longer view holds no latency the shorter one lacks, its quantiles are the
    shorter one's; where it holds more, its own: as computed from its own histogram."""
    rng = random.Random(3)
    w = RollingWindow(0.0)
    t = 0.0
    for _ in range(400):
        t += rng.choice([0.2, 1.0, 7.0, 45.0])
        for _ in range(rng.randrange(0, 4)):
            w.add(t, processed=1, latency=rng.lognormvariate(-4, 1.5))
        v10, v60, v300 = w.views(t)
        assert [v10, v60, v300] == [w.view(t, 10), w.view(t, 60), w.view(t, 300)]
        for v in (v10, v60, v300):
            seconds = v.window_seconds
            # its own histograms (the slot in progress, its completed slots, for 300 s
            # the coarse slot in progress), clamped to the view's own extremes
            hists = w._hists(seconds)  # type: ignore[arg-type]
            lo, hi = w._extremes(seconds)  # type: ignore[arg-type]
            assert (v.p50, v.p95, v.p99) == _quantiles3(hists, w.bounds, lo, hi)


@pytest.mark.anyio
async def test_a_snapshot_built_while_events_pour_in_is_of_one_instant() -> None:
    """A tick of 1,500 components built on the loop (in steps, under the time budget)
    while another task folds one more item into every component at each turn of the
    loop: the snapshot counts exactly what was folded before it began, and the next one
    everything."""
    clock = FakeClock()
    agg = _agg(clock)
    n = 1500
    agg.fold_events([Event(f"c{i}", "processed", latency=0.01) for i in range(n)])
    clock.advance(1)
    judge = HealthJudge(alerts=AlertEngine())
    cache = TickCache(agg, tick_s=0.0, judge=judge, clock=clock.monotonic, wall=clock.wall)
    await cache.snapshot()  # the first build: every component read
    agg.fold_events([Event(f"c{i}", "processed") for i in range(n)])
    clock.advance(1)
    folded_before = 2 * n
    building = True
    poured = 0

    async def pour() -> None:
        """From the moment the read is under way: one item into a component at every
        turn of the loop, going round all of them."""
        nonlocal poured
        while agg._reading is None:
            await anyio.lowlevel.checkpoint()
        while building:
            agg.fold_events([Event(f"c{poured % n}", "processed")])
            poured += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(pour)
        snap = await cache.snapshot()
        building = False
    assert poured >= n // 256  # the build let the pouring task in, again and again
    assert sum(c.items_processed for c in snap.detailed_components.values()) == folded_before
    assert snap.components.total == n
    clock.advance(1)
    nxt = await cache.snapshot()
    assert sum(c.items_processed for c in nxt.detailed_components.values()) == (
        folded_before + poured
    )


def test_a_read_made_in_the_middle_of_another_leaves_the_next_one_right() -> None:
    """A read in one piece between two steps of another (which it does not disturb): the
    reads after both are still what reading everything gives."""
    clock = FakeClock()
    kept, full = _agg(clock, view=60), _agg(clock, view=10)
    for agg in (kept, full):
        agg.fold_events([Event(f"c{i}", "processed", latency=0.01) for i in range(300)])
    clock.advance(30)  # in every view still: each is read anew
    want = full.figures(view=60)
    steps = kept._figures_steps(None, (), None, Pace(every=20))
    next(steps)
    clock.advance(300)  # past every view: all quiet, kept by the read in between
    assert _enc(kept.figures()) == _enc(full.figures(view=60))
    assert _enc(finish(steps)) == _enc(want)
    clock.advance(1)
    assert _enc(kept.figures()) == _enc(full.figures(view=60))


_KINDS = (
    "processed",
    "processed",
    "error",
    "heartbeat",
    "breaker",
    "stopped",
    "started",
    "span_end",
)


@pytest.mark.parametrize("view", [10, 60, 300])
def test_reading_again_what_only_the_clock_moved_gives_a_full_read(view: int) -> None:
    """Sparse reports (most components silent most ticks, so their figures are their
    last read's with the clock moved on: ``ComponentState.reread``), of every kind that
    changes a component without touching its window (status, heartbeat, breaker, an
    error's detail, client errors, span ends), read on the default view and, in a twin
    fed alike, on a view that is not its default (read afresh every time): the same
    figures at every tick, as the windows' slots leave their views one by one."""
    rng = random.Random(view)
    clock = FakeClock()
    kept = _agg(clock, view=view)
    full = _agg(clock, view=10 if view != 10 else 60)
    names = [f"c{i}" for i in range(40)]
    reread = 0
    before = None
    for tick in range(160):
        batch: list[Event] = []
        for name in rng.sample(names, rng.randrange(0, 4)):
            kind = rng.choice(_KINDS)
            if kind == "breaker":
                batch.append(Event(name, kind, detail=rng.choice(["open", "closed"])))
            elif kind == "error":
                batch.append(Event(name, kind, detail=rng.choice([None, "boom"]), latency=0.01))
            elif kind == "span_end":
                batch.append(Event(name, kind, span_id="s", latency=rng.choice([0.004, 0.2])))
            elif kind in ("stopped", "started", "heartbeat"):
                batch.append(Event(name, kind))  # type: ignore[arg-type]
            else:
                batch.append(Event(name, kind, latency=rng.choice([None, 0.002, 0.3, 2.0])))
        deltas = (
            [Delta(rng.choice(names), processed=2, client_errors=1, last_error="4xx")]
            if tick % 9 == 4
            else []
        )
        typed = rng.choice(names) if tick % 13 == 6 else None  # a type, no window change
        for agg in (kept, full):
            agg.fold_events(batch)
            agg.fold_deltas(deltas)
            if typed is not None:
                agg.register_component(typed, f"Type{tick}")
        a, b = kept.figures(), full.figures(view=view)  # type: ignore[arg-type]
        assert _enc(a) == _enc(b), tick
        if before is not None:
            for n, f in a.detailed_components.items():
                old = before.get(n)
                # new figures, the latencies' own object: read again, not afresh
                reread += old is not None and f is not old and f.latency is old.latency
        before = dict(a.detailed_components)
        clock.advance(rng.choice([0.25, 1.0, 1.0, 3.0, 11.0]))
    assert reread > 500
