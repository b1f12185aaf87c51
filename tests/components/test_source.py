"""The Source, run for real: blueprints through a Harness, items through memory streams
into a Store: exact counts and error ratios, its rate on jumping and blocked clocks, and
items that are reproducible."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.components.source import Source
from streammetrics.components.store import Store
from streammetrics.harness import Harness
from tests.support.harness import pipeline, rows, running, snapshot, stopped
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_source_to_store_counts_every_item(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    yaml_text = pipeline(db, "{rate: 50000, batch: 250, limit: 1000}", "{variant: map}", 64)
    async with running(yaml_text) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
        store = harness.components["store"]
        assert isinstance(store, Store)
        assert store.statistics().rows == 1000
    stored = rows(db)
    assert len(stored) == 1000
    assert [r["id"] for r in stored] == list(range(1000))
    assert all(r["processed_by"] == "proc" for r in stored)
    comps = snap.detailed_components
    assert comps["src"].items_processed == 1000
    assert comps["proc"].items_processed == 1000
    assert comps["proc"].errors_encountered == 0
    assert comps["store"].items_processed == 1000
    streams = snap.streaming.streams
    assert streams["src->proc:input"].total_messages == 1000
    assert streams["proc->store:kept"].total_messages == 1000


async def test_error_ratio_fails_exactly_that_fraction(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    src = "{rate: 50000, batch: 500, limit: 1000, error_ratio: 0.07, seed: 3}"
    async with running(pipeline(db, src, "{variant: map}")) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
        source = harness.components["src"]
        assert isinstance(source, Source)
        assert source.statistics().failing == 70
    proc = snap.detailed_components["proc"]
    assert proc.errors_encountered == 70
    assert proc.items_processed == 930
    assert proc.last_error == "ItemFailed: item marked to fail"
    assert len(rows(db)) == 930
    assert snap.streaming.streams["src->proc:input"].total_messages == 1000
    assert snap.streaming.streams["proc->store:kept"].total_messages == 930


async def test_source_is_paced_and_observes_its_latency() -> None:
    bp = """
system:
  name: s
  components:
    - {name: src, type: Source,
       config: {rate: 2000, batch: 20, limit: 200, latency_ms: 3, latency_jitter_ms: 1}}
"""
    t0 = anyio.current_time()
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src"))
        elapsed = anyio.current_time() - t0
        src = snapshot(harness, agg).detailed_components["src"]
    assert src.items_processed == 200
    assert src.status == "stopped"
    assert src.latency.count == 200
    assert src.latency.p50 is not None and 0.001 <= src.latency.p50 <= 0.005
    assert 0.09 <= elapsed < 2.0, elapsed  # 200 items at 2000/s take 0.1 s, not no time


class JumpingClock:
    """A Source's clock and sleep in one: time moves only when the Source sleeps, by what
    it asked for, plus a stall of ``stall_s`` on the first sleep that ends at or past
    ``stall_at`` (the event loop stopped: a GC pause, a slow render, SIGSTOP).

    Each sleep first notes (time, items sent so far). Between two sleeps the clock stands
    still, so every item was sent at the time noted at the next sleep: ``sent_by(t)`` is
    exact."""

    def __init__(
        self, source: Source, *, t0: float, stall_at: float | None, stall_s: float
    ) -> None:
        self.source = source
        self.t = t0
        self.stall_at = stall_at
        self.stall_s = stall_s
        self.woke: float | None = None
        """When the Source woke from the stall."""
        self.trace: list[tuple[float, int]] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.trace.append((self.t, self.source.statistics().sent))
        self.t += seconds
        if self.stall_at is not None and self.t >= self.stall_at:
            self.t += self.stall_s
            self.stall_at = None
            self.woke = self.t
        await anyio.lowlevel.checkpoint()

    def sent_by(self, t: float) -> int:
        """Items sent at or before ``t``."""
        return max((n for at, n in self.trace if at <= t), default=0)

    def per_second(self, start: float, seconds: int) -> list[int]:
        """Items sent in each second after ``start`` (excluding what went at ``start``)."""
        return [self.sent_by(start + k + 1) - self.sent_by(start + k) for k in range(seconds)]


async def run_on_jumping_clock(
    rate: float, batch: int, limit: int, stall_at: float | None = None, stall_s: float = 0
) -> JumpingClock:
    """A Source of ``limit`` items run by a real harness on a ``JumpingClock`` that starts
    at 1000.0 and stalls ``stall_s`` seconds ``stall_at`` seconds in."""
    bp = f"""
system:
  name: paced
  components:
    - {{name: src, type: Source, config: {{rate: {rate}, batch: {batch}, limit: {limit}}}}}
"""
    harness = Harness(parse_blueprint(bp), flush_interval=0.02)
    src = harness.components["src"]
    assert isinstance(src, Source)
    t0 = 1000.0  # far from 0, as a monotonic clock is: float rounding shows
    at = None if stall_at is None else t0 + stall_at
    clock = JumpingClock(src, t0=t0, stall_at=at, stall_s=stall_s)
    src.clock, src.sleep = clock, clock.sleep
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        await until(lambda: src.statistics().done)
        harness.stop()
    assert src.statistics().sent == limit
    return clock


async def test_source_runs_at_its_rate_on_a_clock_that_only_moves_when_it_sleeps() -> None:
    clock = await run_on_jumping_clock(rate=200, batch=10, limit=1100)
    assert clock.woke is None
    counts = clock.per_second(1000.0, 5)
    assert all(190 <= n <= 210 for n in counts), counts
    assert clock.sent_by(1005.0) == 1000  # exactly on schedule: floor(5 s * 200/s)


@pytest.mark.parametrize(
    ("rate", "batch", "stall_s"), [(200, 10, 5.0), (5000, 250, 2.5), (200, 10, 60.0)]
)
async def test_source_is_back_at_its_rate_right_after_the_clock_jumps(
    rate: int, batch: int, stall_s: float
) -> None:
    max_debt = max(batch, rate)  # one second's worth
    limit = 3 * rate + max_debt + 4 * rate
    clock = await run_on_jumping_clock(rate, batch, limit, stall_at=3.0, stall_s=stall_s)
    assert clock.woke == pytest.approx(1000.0 + 3.0 + stall_s)
    before = clock.per_second(1000.0, 3)
    assert all(rate - batch <= n <= rate + batch for n in before), before
    # Sent at the instant it woke: the catch-up, at most one second's worth.
    caught_up = clock.sent_by(clock.woke) - clock.sent_by(clock.woke - 1e-6)
    assert max_debt - batch <= caught_up <= max_debt, caught_up
    # Then the configured rate again, from the first second on.
    after = clock.per_second(clock.woke, 3)
    assert all(rate - batch <= n <= rate + batch for n in after), after


async def test_source_rate_recovers_in_real_time_after_the_loop_is_blocked() -> None:
    rate, batch = 200, 10
    bp = f"""
system:
  name: paced
  components:
    - {{name: src, type: Source, config: {{rate: {rate}, batch: {batch}}}}}
    - {{name: sink, type: StreamProcessor}}
  bindings:
    - {{from_component: src, to_component: sink}}
"""
    async with running(bp) as (harness, _agg):
        src = harness.components["src"]
        assert isinstance(src, Source)

        def sent() -> int:
            return src.statistics().sent

        await anyio.sleep(0.2)
        t0, n0 = time.monotonic(), sent()
        await anyio.sleep(0.5)
        t1, n1 = time.monotonic(), sent()
        assert abs((n1 - n0) - rate * (t1 - t0)) <= rate / 4, (n1 - n0, t1 - t0)

        stall: dict[str, float] = {}

        async def block_the_loop() -> None:
            stall["sent"] = sent()
            time.sleep(1.5)  # noqa: ASYNC251 - the point: nothing else runs meanwhile
            stall["end"] = time.monotonic()

        async with anyio.create_task_group() as tg:
            tg.start_soon(block_the_loop)
        await anyio.sleep(0.25)
        t2, n2 = time.monotonic(), sent()
        # The catch-up (a second's worth of the 1.5 s owed), then the rate.
        caught_up = n2 - stall["sent"] - rate * (t2 - stall["end"])
        assert rate - 2 * batch <= caught_up <= rate + 2 * batch, caught_up
        await anyio.sleep(1.0)
        t3, n3 = time.monotonic(), sent()
        assert abs((n3 - n2) - rate * (t3 - t2)) <= rate / 4, (n3 - n2, t3 - t2)


async def test_source_items_are_reproducible(tmp_path: Path) -> None:
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    cfg = "{rate: 50000, batch: 100, limit: 50, seed: 11, routes: [a, b], error_ratio: 0.2}"
    bp = f"""
system:
  name: twins
  components:
    - {{name: src1, type: Source, config: {cfg}}}
    - {{name: src2, type: Source, config: {cfg}}}
    - {{name: tag1, type: StreamProcessor}}
    - {{name: tag2, type: StreamProcessor}}
    - {{name: store1, type: Store, config: {{path: "{one}"}}}}
    - {{name: store2, type: Store, config: {{path: "{two}"}}}}
  bindings:
    - {{from_component: src1, to_component: tag1}}
    - {{from_component: src2, to_component: tag2}}
    - {{from_component: tag1, to_component: store1}}
    - {{from_component: tag2, to_component: store2}}
"""
    async with running(bp) as (_harness, agg):
        await until(stopped(agg, "store1", "store2"))
    first = rows(one)
    assert len(first) == 40  # every fifth item failed on the way
    assert [{**r, "processed_by": "tag2"} for r in first] == rows(two)
    assert [r["route"] for r in first[:4]] == ["a", "b", "a", "b"]
    assert set(first[0]) == {"id", "value", "route", "fail", "processed_by"}
