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
