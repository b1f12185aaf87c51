"""The tick cache: snapshots, process samples, custom collectors and Prometheus renders made at
most once per tick and shared by every request of it; what hangs times out into partial data."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import pytest
from prometheus_client import Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import streammetrics
from streammetrics import (
    MetricsEndpoint,
)
from streammetrics.http.app import create_app
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Event
from streammetrics.prometheus.exposition import ExpositionWriter
from streammetrics.snapshot import Figures, ProcessStats, Snapshot
from streammetrics.views.tick_cache import TickCache
from tests.support.exposition import OPENMETRICS, families, value
from tests.support.http_app import (
    API_DONE,
    FakeClock,
    FixedSampler,
    running,
    seed,
    seed_many,
    service_for,
)
from tests.support.loop import with_turns
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_a_hung_collector_times_out_and_the_rest_is_served() -> None:
    release = threading.Event()

    class Hung(Collector):
        def collect(self) -> Iterator[Metric]:
            release.wait(10)
            return iter(())

    ep = MetricsEndpoint(name="m", port=0)
    service = TickCache(ep.aggregator, tick_s=0.0, sample_timeout_s=0.2)
    service.add_collector(Hung())
    try:
        t0 = time.monotonic()
        snap = await service.snapshot()
        assert time.monotonic() - t0 < 2.0
        assert snap.errors == ["custom collectors timed out after 0.2s"]
        # While the first call is still stuck, the next tick says so rather than
        # piling up another thread behind it.
        snap = await service.snapshot()
        assert snap.errors == ["custom collectors: the previous collection is still running"]
        assert b"system_health_score" in await service.prometheus()
    finally:
        release.set()


async def test_hung_sampler_times_out_into_partial_data(clock: FakeClock) -> None:
    release = threading.Event()

    class HungSampler:
        def sample(self) -> ProcessStats:
            release.wait(5)
            return ProcessStats(1.0, 1.0)

    service = service_for(seed(clock), clock, sampler=HungSampler())
    service.sample_timeout_s = 0.1
    try:
        with anyio.fail_after(3):
            snap = await service.snapshot()
    finally:
        release.set()
    assert snap.errors == ["process sampler timed out after 0.1s"]
    assert snap.performance.memory_usage_mb is None
    assert snap.detailed_components["task_api"].items_processed == API_DONE


async def _append(into: list[Any], coro: Any) -> None:
    into.append(await coro)


async def test_requests_waiting_for_a_build_are_woken_together(clock: FakeClock) -> None:
    """Requests that must wait for a snapshot build leave together when it is done, not
    one per event-loop turn as they would from a lock's queue (that made seconds of
    latency with hundreds of connections)."""
    gate = threading.Event()

    class GatedSampler:
        def sample(self) -> ProcessStats:
            gate.wait(5)
            return ProcessStats(1.0, 1.0)

    service = service_for(seed(clock), clock, sampler=GatedSampler())
    done: list[Any] = []
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(_append, done, service.snapshot())
                await anyio.sleep(0.05)  # one builds (held in the sampler), 49 wait
                assert not done
                gate.set()
                # the build ends in a worker thread: poll for it
                while not service.statistics().snapshots_built:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
                turns = 0
                while len(done) < 50:
                    await anyio.lowlevel.checkpoint()  # one event-loop turn
                    turns += 1
                assert turns <= 3
    finally:
        gate.set()
    assert len({id(s) for s in done}) == 1
    assert service.statistics().snapshots_built == 1


async def test_while_a_build_runs_requests_get_the_snapshot_before_it(clock: FakeClock) -> None:
    """A slow build (10,000 components take a good part of a second) holds up no request
    once a snapshot exists: they get the previous one at once, and the next once built."""
    gate = threading.Event()
    gate.set()

    class GatedSampler:
        def sample(self) -> ProcessStats:
            gate.wait(5)
            return ProcessStats(1.0, 1.0)

    service = service_for(seed(clock), clock, sampler=GatedSampler())
    try:
        first = await service.snapshot()
        clock.advance(service.tick_s)  # stale: the next request builds
        gate.clear()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                built: list[Any] = []
                tg.start_soon(_append, built, service.snapshot())
                await anyio.sleep(0.05)  # held in the sampler
                t0 = time.perf_counter()
                during = [await service.snapshot() for _ in range(20)]
                assert time.perf_counter() - t0 < 0.5
                assert all(s is first for s in during)
                assert service.statistics().stale_snapshot_hits == 20
                gate.set()
        assert built[0] is not first
        assert await service.snapshot() is built[0]
        # Too old to excuse: past the bound, a request waits for the build after all.
        clock.advance(100 * service.tick_s)
        gate.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_append, built, service.snapshot())
            await anyio.sleep(0.05)
            waiting: list[Any] = []
            tg.start_soon(_append, waiting, service.snapshot())
            await anyio.sleep(0.05)
            assert not waiting
            gate.set()
        assert waiting[0] is built[-1]
    finally:
        gate.set()


async def test_render_is_cached_per_tick(service: TickCache, clock: FakeClock) -> None:
    async with running(create_app(service)) as client:
        first = await client.get("/metrics")
        second = await client.get("/metrics")
        assert first.text == second.text
        stats = service.statistics()
        assert (stats.renders, stats.render_cache_hits) == (1, 1)

        async with anyio.create_task_group() as tg:  # a scrape storm within one tick
            for _ in range(20):
                tg.start_soon(client.get, "/metrics")
        assert service.statistics().renders == 1

        await client.get("/metrics", headers={"accept": OPENMETRICS})
        assert service.statistics().renders == 2  # one render per format

        clock.advance(1.0)  # the tick turns: a new snapshot, a new render
        await client.get("/metrics")
    stats = service.statistics()
    assert stats.renders == 3
    assert stats.render_cache_hits == 21
    assert stats.snapshots_built == 2


async def test_concurrent_first_scrapes_share_one_render(service: TickCache) -> None:
    bodies: list[bytes] = []

    async def scrape() -> None:
        bodies.append(await service.prometheus())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(scrape)
    assert len(set(bodies)) == 1
    assert service.statistics().renders == 1
    assert service.statistics().snapshots_built == 1


async def test_extra_collectors_are_rendered_with_the_snapshot(clock: FakeClock) -> None:
    custom = Counter("orders_placed", "Orders placed", registry=None)
    custom.inc(4)
    service = TickCache(seed(clock), clock=clock.monotonic)
    service.add_collector(custom)
    fams = families((await service.prometheus()).decode())
    assert value(fams["orders_placed"], "orders_placed_total") == 4
    assert "system_health_score" in fams
    # No sampler: the process gauges are left out rather than exposed as made-up zeros.
    assert "streammetrics_process_resident_memory_bytes" not in fams


def _processed(text: str, component: str) -> float:
    """The component's processed count in an exposition (a line search: parsing a body of
    thousands of components takes seconds)."""
    prefix = f'component_items_processed_total{{component="{component}"}} '
    (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_a_scrape_is_served_while_a_new_snapshot_arrives(clock: FakeClock) -> None:
    """The render runs on the event loop in steps: while it is under way a new snapshot is
    built and /health answers from it; the scrape gets the whole body of the snapshot it
    began with (its Content-Length, not chunked), the next scrape the new one."""
    agg = seed_many(clock, 1500)
    service = TickCache(agg, clock=clock.monotonic, wall=clock.wall, render_step_s=0.0)
    first = await service.snapshot()
    got: list[httpx.Response] = []
    async with running(create_app(service)) as client, anyio.create_task_group() as tg:

        async def scrape() -> None:
            got.append(await client.get("/metrics"))

        tg.start_soon(scrape)
        await until(lambda: service.exposition_statistics().renders)  # the render has begun
        agg.fold_events([Event("c0000", "processed", count=1000)])
        clock.advance(1.0)
        second = await service.snapshot()
        health = await client.get("/health")
        assert second is not first and second.uptime_seconds == health.json()["uptime_seconds"]
        assert service.statistics().renders == 0  # all of that while the render went on
    (r,) = got
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    assert "transfer-encoding" not in r.headers
    assert _processed(r.text, "c0000") == 1
    # The snapshot's part of the body is the one-shot render of the first snapshot.
    snapshot_part = ExpositionWriter().render(first)
    cut = snapshot_part.index(b"# HELP streammetrics_events_rejected")
    assert r.content[:cut] == snapshot_part[:cut]
    assert r.text.count("component_health{") == 1500
    assert _processed((await service.prometheus()).decode(), "c0000") == 1001
    assert service.statistics().renders == 2


async def test_a_render_outlives_the_request_that_began_it(clock: FakeClock) -> None:
    """A request cancelled mid-render (a client gone, a deadline): the render is finished
    and kept for the requests after it, not begun again."""
    service = TickCache(seed_many(clock, 1500), clock=clock.monotonic, render_step_s=0.0)
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def scrape() -> None:
            with scope:
                await service.exposition()

        tg.start_soon(scrape)
        await until(lambda: service.exposition_statistics().renders)
        scope.cancel()
    assert service.statistics().renders == 1
    body = await service.exposition()
    assert body.size == len(body.body()) and b"c1499" in body.body()
    stats = service.statistics()
    assert (stats.renders, stats.render_cache_hits) == (1, 1)


async def test_metrics_goes_out_with_its_length_and_head_without_its_body(
    service: TickCache,
) -> None:
    async with running(create_app(service)) as client:
        for accept in (None, OPENMETRICS):
            headers = {"accept": accept} if accept else {}
            r = await client.get("/metrics", headers=headers)
            body = await service.prometheus(openmetrics=accept is not None)
            assert r.content == body
            assert r.headers["content-length"] == str(len(body))
            assert "transfer-encoding" not in r.headers
            head = await client.head("/metrics", headers=headers)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(len(body))


async def test_a_large_render_lets_the_event_loop_run(clock: FakeClock) -> None:
    """At the default step (2 ms of work at a time) a 1,500-component render, cold, is many
    turns of the loop, not one."""
    service = TickCache(seed_many(clock, 1500), clock=clock.monotonic)
    await service.snapshot()
    body, turns = await with_turns(service.exposition())
    assert body.size > 1_000_000
    assert turns >= 3


# -- served: stale-while-revalidate -------------------------------------------------------


class SlowFigures:
    """A figure source that makes a build as slow as a test needs: each call takes
    ``build_s`` of the test's clock, then waits for ``gate`` when a test has closed it."""

    def __init__(self, clock: FakeClock, build_s: float = 0.5) -> None:
        self.clock = clock
        self.build_s = build_s
        self.gate: anyio.Event | None = None
        self.entered = 0
        self.cancelled = 0

    def close(self) -> anyio.Event:
        """Hold every call from now on until the returned event is set."""
        self.gate = anyio.Event()
        return self.gate

    async def __call__(self) -> dict[str, int]:
        self.entered += 1
        self.clock.advance(self.build_s)
        if self.gate is not None:
            try:
                await self.gate.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled += 1
                raise
        return {"calls": self.entered}


def slow_service(clock: FakeClock) -> tuple[TickCache, SlowFigures]:
    """The seeded system's service whose builds take half a second of its clock."""
    service = service_for(seed(clock), clock)
    service.sample_timeout_s = 30.0  # a held figure source is held, not timed out
    slow = SlowFigures(clock)
    service.add_figures("slow", slow)
    return service, slow


async def test_served_a_stale_snapshot_is_answered_while_the_next_is_built(
    clock: FakeClock,
) -> None:
    """Served, the request that finds the snapshot stale (by less than its build took) is
    answered from it at once, and so is /health on another connection while the next one
    is built in the background; the next is served once built."""
    service, slow = slow_service(clock)
    agg = service._aggregator
    assert agg is not None
    async with running(create_app(service)) as client:
        other = httpx.AsyncClient(base_url=client.base_url, timeout=5.0)
        async with other:
            first = await client.get("/health")  # no snapshot yet: this one waits for it
            assert (first.status_code, first.json()["status"]) == (200, "healthy")
            agg.fold_events([Event("task_store", "stopped")])
            clock.advance(service.tick_s)  # stale, by less than the build's 0.5 s
            release = slow.close()
            with anyio.fail_after(2):  # the build is held: whoever waits for it fails here
                r = await client.get("/health")
                assert (r.status_code, r.json()) == (200, first.json())
                await until(lambda: slow.entered == 2)  # the build runs, held in the source
                during = [await other.get("/health") for _ in range(5)]
            assert all((d.status_code, d.json()) == (200, first.json()) for d in during)
            stats = service.statistics()
            assert (stats.snapshots_built, stats.stale_snapshot_hits) == (1, 6)
            release.set()
            await until(lambda: service.statistics().snapshots_built == 2)
            after = await other.get("/health")
            assert (after.status_code, after.json()["status"]) == (503, "degraded")
    stats = service.statistics()
    assert (stats.background_builds, stats.background_failures) == (1, 0)
    assert stats.stale_snapshot_hits == 6


async def test_outside_its_serving_lifetime_a_stale_snapshot_is_built_and_waited_for(
    clock: FakeClock,
) -> None:
    service, slow = slow_service(clock)
    first = await service.snapshot()
    clock.advance(service.tick_s)
    release = slow.close()
    got: list[Any] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_append, got, service.snapshot())
        await until(lambda: slow.entered == 2)
        assert not got  # it waits for its own build
        release.set()
    assert got[0] is not first
    stats = service.statistics()
    assert (stats.snapshots_built, stats.stale_snapshot_hits, stats.background_builds) == (2, 0, 0)


async def test_a_reader_after_a_pause_longer_than_a_build_waits_for_a_snapshot_of_now(
    clock: FakeClock,
) -> None:
    """Served, a snapshot stale by more than its build took is not answered from: a reader
    back after a pause gets figures of now, not of its previous visit."""
    service, _slow = slow_service(clock)
    async with running(create_app(service)) as client:
        first = (await client.get("/health")).json()
        clock.advance(service.tick_s + 0.6)  # past the tick and the 0.5 s build
        second = (await client.get("/health")).json()
    assert second["uptime_seconds"] > first["uptime_seconds"] + service.tick_s
    stats = service.statistics()
    assert (stats.snapshots_built, stats.stale_snapshot_hits, stats.background_builds) == (2, 0, 0)


async def test_a_fresh_snapshot_is_waited_for_even_while_served(clock: FakeClock) -> None:
    """The endpoint's ticker asks for a fresh snapshot (its alert rules step every tick):
    it waits for the build in the background rather than take the previous one, and no
    second build starts beside it."""
    service, slow = slow_service(clock)
    async with running(create_app(service)) as client:
        first = await service.snapshot()
        clock.advance(service.tick_s)
        release = slow.close()
        assert (await client.get("/health")).status_code == 200  # begins the background build
        await until(lambda: slow.entered == 2)
        ticked: list[Any] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_append, ticked, service.snapshot(fresh=True))
            await anyio.sleep(0.05)
            assert not ticked
            release.set()
        assert ticked[0] is not first
        stats = service.statistics()
        assert (stats.snapshots_built, stats.background_builds) == (2, 1)
        assert slow.entered == 2
        # With no build under way it builds the next itself when the tick turns.
        clock.advance(service.tick_s)
        assert await service.snapshot(fresh=True) is not ticked[0]
        assert service.statistics().background_builds == 1


class BreakableJudge(HealthJudge):
    """A judge that raises while ``broken``: a build that fails (a bug), which no real
    input makes."""

    broken = False

    async def judge_async(self, figures: Figures, **kwargs: Any) -> Snapshot:
        if self.broken:
            raise RuntimeError("the judge broke")
        return await super().judge_async(figures, **kwargs)


async def test_a_background_build_that_fails_is_seen_by_the_next_request(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed background build is not lost: it is logged and counted, and the request
    after it builds itself and answers with the error, as it would have unserved; once a
    build succeeds, stale snapshots are answered from again."""
    judge = BreakableJudge()
    service = TickCache(
        seed(clock),
        sampler=FixedSampler(ProcessStats(512.0, 25.5)),
        clock=clock.monotonic,
        wall=clock.wall,
        judge=judge,
    )
    service.add_figures("slow", SlowFigures(clock))
    async with running(create_app(service)) as client:
        first = await client.get("/health")
        assert first.status_code == 200
        clock.advance(service.tick_s)
        judge.broken = True
        with caplog.at_level(logging.WARNING, logger="streammetrics"):
            assert (await client.get("/health")).status_code == 200  # the previous one
            await until(lambda: service.statistics().background_failures == 1)
        assert "building a snapshot failed" in caplog.text
        assert "the judge broke" in caplog.text
        r = await client.get("/health")  # builds itself, and fails as it would unserved
        assert r.status_code == 500 and r.json()["error"] == "internal error"
        judge.broken = False
        clock.advance(service.tick_s)  # in the window, but after a failure: no stale answer
        healthy = await client.get("/health")  # builds itself once more: now it works
        assert healthy.status_code == 200
        assert healthy.json()["uptime_seconds"] > first.json()["uptime_seconds"]
        clock.advance(service.tick_s)
        assert (await client.get("/health")).json() == healthy.json()  # stale again
        await until(lambda: service.statistics().background_builds == 1)
    stats = service.statistics()
    assert (stats.snapshots_built, stats.background_failures, stats.stale_snapshot_hits) == (
        3,
        1,
        2,
    )


async def test_shutdown_cancels_a_background_build(clock: FakeClock) -> None:
    """Stopping the server cancels the build under way and waits for it; the service then
    builds as an unserved one does."""
    service, slow = slow_service(clock)
    with anyio.fail_after(10):
        async with running(create_app(service)) as client:
            first = await client.get("/health")
            clock.advance(service.tick_s)
            slow.close()  # never released: only the shutdown ends this build
            assert (await client.get("/health")).json() == first.json()
            await until(lambda: slow.entered == 2)
    assert slow.cancelled == 1
    stats = service.statistics()
    assert (stats.snapshots_built, stats.background_builds, stats.background_failures) == (1, 0, 0)
    slow.gate = None
    assert (await service.snapshot()).uptime_seconds > first.json()["uptime_seconds"]
    assert service.statistics().snapshots_built == 2


async def test_an_endpoint_with_a_slow_build_answers_health_at_once_each_tick() -> None:
    """A whole MetricsEndpoint whose build takes a second (a slow figure source): /health,
    polled across several ticks, never waits for one, and the snapshot still advances,
    built by the ticker or in the background."""

    class Slow(MetricsEndpoint):
        async def figures(self) -> dict[str, Any]:
            await anyio.sleep(1.0)
            return {}

    ep = Slow(name="slow", port=0, tick_s=0.2)
    async with (
        streammetrics.serve(ep),
        httpx.AsyncClient(base_url=ep.url, timeout=5.0) as client,
    ):
        await until(lambda: ep.service.statistics().snapshots_built >= 1)
        longest = 0.0
        uptimes: list[float] = []
        t_end = time.perf_counter() + 3.0
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            r = await client.get("/health")
            longest = max(longest, time.perf_counter() - t0)
            assert r.status_code == 200
            uptimes.append(r.json()["uptime_seconds"])
            await anyio.sleep(0.02)
    assert longest < 0.5  # a build is a second: no answer waited for one
    assert len(set(uptimes)) >= 2  # the snapshot moved on meanwhile
    stats = ep.service.statistics()
    assert stats.snapshots_built >= 3 and stats.stale_snapshot_hits > 0
