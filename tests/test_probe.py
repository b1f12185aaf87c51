"""Probe: local counters and a bucket histogram, handed over as ``Delta``s by ``flush()``."""

from __future__ import annotations

import time
import types
from collections.abc import Iterator
from types import SimpleNamespace

import anyio
import pytest

import streammetrics.probe as probe_mod
from streammetrics.bus import EventBus
from streammetrics.model.events import Delta
from streammetrics.probe import Probe
from tests.support.histograms import N_BUCKETS, bucket_index, histogram
from tests.support.sinks import Recorder


class FakePerfCounter:
    """Stands in for ``time.perf_counter`` inside probe.py only; each call advances by
    the next step, so a timed block takes exactly the step we choose."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.steps: list[float] = []

    def __call__(self) -> float:
        t = self.t
        if self.steps:
            self.t += self.steps.pop(0)
        return t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePerfCounter]:
    fake = FakePerfCounter()
    monkeypatch.setattr(probe_mod, "time", types.SimpleNamespace(perf_counter=fake))
    yield fake


def test_counts_and_latency_histogram() -> None:
    p = Probe("worker")
    p.processed()
    p.processed(5, latency=0.010, nbytes=100)  # one observation for the batch of 5
    p.processed(latency=0.5)
    p.error(detail="first")
    p.error(2, detail="second", latency=0.010)
    (d,) = p.flush()
    assert d == Delta(
        "worker",
        processed=7,
        errors=3,
        bytes=100,
        latency_counts=histogram(0.010, 0.5, 0.010),
        latency_sum=pytest.approx(0.52),  # type: ignore[arg-type]
        latency_min=0.010,
        latency_max=0.5,
        last_error="second",
    )
    assert d.latency_counts is not None
    assert d.latency_counts[bucket_index(0.010)] == 2  # 0.009050967 < 0.010 <= 0.010
    assert d.latency_counts[bucket_index(0.5)] == 1  # 0.4096 < 0.5 <= 0.5
    assert sum(d.latency_counts) == 3
    assert len(d.latency_counts) == N_BUCKETS


def test_a_probe_s_extremes_clamp_the_quantiles_it_feeds() -> None:
    """10.3 ms every time, through probe, bus and aggregator: the delta carries its
    extremes, so every quantile reads 10.3 ms, not a point across the bucket it falls in;
    the flush starts the extremes again."""
    from streammetrics.aggregator import Aggregator

    bus = EventBus()
    agg = Aggregator()
    bus.subscribe(agg)
    p = bus.probe("worker")
    for _ in range(50):
        p.processed(latency=0.0103)
    bus.flush()
    c = agg.figures().detailed_components["worker"]
    lat = c.latency
    assert (lat.p50, lat.p95, lat.p99) == pytest.approx((0.0103, 0.0103, 0.0103), rel=1e-6)
    p.processed(latency=0.2)
    (d,) = p.flush()
    assert (d.latency_min, d.latency_max) == (0.2, 0.2)
    assert p.flush() == []


def test_counts_without_latency_send_no_histogram() -> None:
    p = Probe("c")
    p.processed(3)
    (d,) = p.flush()
    assert (d.processed, d.errors, d.latency_counts, d.latency_sum) == (3, 0, None, 0.0)


def test_flush_resets() -> None:
    p = Probe("c")
    p.processed(2, latency=0.1, nbytes=5)
    p.error(detail="x")
    p.message("s")
    assert len(p.flush()) == 2
    assert p.flush() == []  # nothing since
    p.processed()
    (d,) = p.flush()
    assert d == Delta("c", processed=1)  # no carried-over bytes, latency or last_error


def test_client_errors_are_their_own_count_and_no_outcome() -> None:
    p = Probe("api")
    outcomes = SimpleNamespace(successes=0, failures=0)

    class Watch:
        def record_success(self) -> None:
            outcomes.successes += 1

        def record_failure(self) -> None:
            outcomes.failures += 1

    p.breaker = Watch()
    p.client_error()
    p.client_error(2)
    (d,) = p.flush()
    assert d == Delta("api", client_errors=3)  # no error, no last_error
    assert (outcomes.successes, outcomes.failures) == (0, 0)  # the breaker saw nothing
    assert p.flush() == []


def test_nothing_counted_flushes_nothing() -> None:
    assert Probe("idle").flush() == []


def test_message_per_stream() -> None:
    p = Probe("src")
    p.message("a->b:input")
    p.message("a->b:input", 4, nbytes=40)
    p.message("a->c:input", nbytes=7)
    out = p.flush()
    assert sorted(out, key=lambda d: d.stream or "") == [
        Delta("src", messages=5, bytes=40, stream="a->b:input"),
        Delta("src", messages=1, bytes=7, stream="a->c:input"),
    ]
    assert p.flush() == []


def test_messages_and_counts_are_separate_deltas() -> None:
    p = Probe("src")
    p.processed(2, nbytes=3)
    p.message("s", 9, nbytes=90)
    counts, msgs = p.flush()
    assert counts == Delta("src", processed=2, bytes=3)
    assert msgs == Delta("src", messages=9, bytes=90, stream="s")


def test_time_counts_processed_and_error(clock: FakePerfCounter) -> None:
    p = Probe("c")
    clock.steps = [0.010]
    with p.time():
        pass
    clock.steps = [0.5]
    with pytest.raises(KeyError, match="missing"), p.time():
        raise KeyError("missing")
    (d,) = p.flush()
    assert (d.processed, d.errors) == (1, 1)
    assert d.latency_counts == histogram(0.010, 0.5)
    assert d.latency_sum == pytest.approx(0.51)
    assert d.last_error == "KeyError: 'missing'"


def test_timed_sync(clock: FakePerfCounter) -> None:
    p = Probe("c")

    @p.timed
    def div(a: int, b: int) -> float:
        """Divide."""
        return a / b

    assert div.__name__ == "div"
    assert div.__doc__ == "Divide."
    clock.steps = [0.002]
    assert div(6, 3) == 2.0
    clock.steps = [0.003]
    with pytest.raises(ZeroDivisionError):
        div(1, 0)
    (d,) = p.flush()
    assert (d.processed, d.errors) == (1, 1)
    assert d.latency_counts == histogram(0.002, 0.003)
    assert d.last_error is not None
    assert d.last_error.startswith("ZeroDivisionError")


@pytest.mark.anyio
async def test_timed_async() -> None:
    p = Probe("c")

    @p.timed
    async def work(x: int) -> int:
        await anyio.sleep(0.01)
        if x < 0:
            raise ValueError("negative")
        return x * 2

    assert await work(4) == 8
    assert await work(5) == 10
    with pytest.raises(ValueError, match="negative"):
        await work(-1)
    (d,) = p.flush()
    assert (d.processed, d.errors) == (2, 1)
    assert d.last_error == "ValueError: negative"
    assert d.latency_counts is not None
    assert sum(d.latency_counts) == 3
    # each call slept >= 10 ms, so the time spans the await (not just creating the coroutine)
    assert d.latency_sum >= 0.03
    assert sum(d.latency_counts[: bucket_index(0.009)]) == 0


@pytest.mark.anyio
async def test_cancellation_is_not_counted_as_an_error() -> None:
    p = Probe("c")

    @p.timed
    async def slow() -> None:
        await anyio.sleep(10)

    with anyio.move_on_after(0.01) as scope:
        await slow()
    assert scope.cancelled_caught
    with anyio.move_on_after(0.01), p.time():
        await anyio.sleep(10)
    assert p.flush() == []  # neither processed nor failed: the work was abandoned


def test_keyboard_interrupt_passes_through_uncounted() -> None:
    p = Probe("c")
    with pytest.raises(KeyboardInterrupt), p.time():
        raise KeyboardInterrupt
    assert p.flush() == []


def test_a_probe_nobody_listens_to_counts_but_reads_no_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streammetrics.probe as probe_mod

    bus = EventBus()
    p = bus.probe("worker")
    assert p.timing is False  # no sink yet

    reads: list[int] = []

    def perf_counter() -> float:
        reads.append(1)
        return time.perf_counter()

    monkeypatch.setattr(probe_mod, "time", SimpleNamespace(perf_counter=perf_counter))

    @p.timed
    def job(fail: bool) -> None:
        if fail:
            raise ValueError("bad")

    with p.time():
        pass
    job(False)
    with pytest.raises(ValueError):
        job(True)
    assert reads == []  # no clock read at all
    recorder = Recorder()
    bus.subscribe(recorder)  # someone listens from now on: timing switches on
    assert p.timing is True
    job(False)
    assert len(reads) == 2
    bus.flush()
    (d,) = recorder.deltas
    # Counted while nobody listened, nothing lost; one latency, from after the subscribe.
    assert (d.processed, d.errors) == (3, 1)
    assert d.latency_counts is not None and sum(d.latency_counts) == 1
    assert d.last_error == "ValueError: bad"
    bus.unsubscribe(recorder)
    assert p.timing is False


def test_latencies_gathered_and_bucketed_in_bulk_count_as_one_by_one() -> None:
    """Thousands of timed calls, processed and failed, bucketed a gathering at a time and
    at the flush: the histogram is the one each latency's own bucket makes, the extremes
    and the sum are theirs, the counts are the calls'."""
    import random

    rng = random.Random(3)
    lats = [rng.lognormvariate(-5.3, 1.0) for _ in range(5_003)]
    p = Probe("worker")
    for k, x in enumerate(lats):
        if k % 7 == 3:
            p.error(latency=x)
        else:
            p.processed(latency=x)
    (d,) = p.flush()
    assert d.latency_counts == histogram(*lats)
    assert (d.latency_min, d.latency_max) == (min(lats), max(lats))
    assert d.latency_sum == pytest.approx(sum(lats), rel=1e-12)
    assert (d.processed, d.errors) == (sum(k % 7 != 3 for k in range(5_003)), 5_003 // 7 + 1)
    assert p.flush() == []
    p.processed(latency=0.25)  # the next flush starts from nothing
    (d,) = p.flush()
    assert (d.latency_counts, d.latency_min, d.latency_max) == (histogram(0.25), 0.25, 0.25)


def test_a_nan_latency_counts_in_the_first_bucket_and_is_no_extreme() -> None:
    """As ``bisect_left`` places it one by one: NaN falls in bucket 0, and it compares
    with nothing, so the extremes are the other latencies'."""
    nan = float("nan")
    for others in ([0.004] * 3, [0.004, 0.02] * 300):  # a few, and past a gathering
        p = Probe("c")
        p.processed(latency=nan)
        for x in others:
            p.processed(latency=x)
        (d,) = p.flush()
        assert d.latency_counts is not None and d.latency_counts[0] == 1
        assert sum(d.latency_counts) == len(others) + 1
        assert (d.latency_min, d.latency_max) == (min(others), max(others))
    p = Probe("c")
    p.processed(latency=nan)
    (d,) = p.flush()
    assert d.latency_counts == [1] + [0] * (N_BUCKETS - 1)
    assert (d.latency_min, d.latency_max) == (float("inf"), float("-inf"))


def test_a_busy_probe_holds_a_bounded_number_of_latencies() -> None:
    """Between flushes a probe keeps a histogram, not every latency: 200,000 timed calls
    (fresh floats, as ``perf_counter()`` differences are) leave it holding a few KB."""
    import tracemalloc

    p = Probe("busy")
    p.processed(latency=0.001)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for k in range(200_000):
            p.processed(latency=(k % 1000) * 1e-5 + 1e-6)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < 32 * 1024, held
    (d,) = p.flush()
    assert d.processed == 200_001 and d.latency_counts is not None
    assert sum(d.latency_counts) == 200_001
