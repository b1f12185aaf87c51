"""What the HTTP handlers talk to: snapshots and Prometheus renders, each made at most
once per tick and shared by every request of that tick.

Why a service between handlers and the aggregator: a scrape storm (many dashboards,
several Prometheus replicas) must cost one snapshot and one render per tick, not one per
request (``generate_latest`` formats every sample in Python: milliseconds per call for a
large registry). The process sample runs in a worker thread (a ``/proc`` read may hang);
the render runs on the event loop in steps of a fraction of a millisecond, as the snapshot
build does.

While the service is served (``serving()``, entered by the app's lifespan) a snapshot that
went stale less than its build took ago is still answered at once and the next one is built
in the background, in a task group the service holds: a 10,000-component build takes a good
part of a second, and the request that happened to find the snapshot stale would otherwise
wait for all of it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import msgspec
from prometheus_client.registry import Collector, CollectorRegistry

from ..errors import HarnessUnavailableError
from ..judge.health import HealthJudge
from ..model.types import describe_exception
from ..prometheus.custom import (
    EMPTY,
    CollectionView,
    CustomCollection,
    CustomCollectors,
    exposed_names,
)
from ..prometheus.exposition import (
    RENDER_STEP_S,
    Exposition,
    ExpositionStatistics,
    ExpositionWriter,
)
from ..steps import BUDGET_S, Pace, Steps, drop_steps, finish_async
from .live import LiveFeed

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ..aggregator import Aggregator
    from ..process_sampler import Sampler
    from ..snapshot import ProcessStats, Snapshot
    from ..windows import ViewSeconds

__all__ = ("FigureSource", "TickCache", "TickCacheStatistics")

_log = logging.getLogger("streammetrics")

#: Gives JSON-able figures for ``/metrics/json``'s ``extra`` (a plugin's ``figures``).
FigureSource = Callable[[], Awaitable[Mapping[str, Any]]]


#: The per-component tables of a snapshot (the bulk of its objects), emptied in steps
#: when a retired snapshot is let go of.
_SNAPSHOT_TABLES: Final = (
    "detailed_components",
    "component_histograms",
    "latency_sums",
    "circuit_breakers",
)
#: Builds a retired snapshot still held elsewhere is looked at again before the service
#: lets go of it as usual.
_RETIRED_BUILDS: Final = 3


class TickCacheStatistics(msgspec.Struct, frozen=True):
    """Counters of the caches, to check that a scrape storm really is one render a tick."""

    snapshots_built: int
    snapshot_cache_hits: int
    stale_snapshot_hits: int
    """Requests answered from the previous snapshot while the next one was being built."""
    background_builds: int
    """Snapshots (of ``snapshots_built``) built in the background, begun by a request that
    was answered from the previous one."""
    background_failures: int
    """Background builds that raised; the request after one builds the snapshot itself."""
    renders: int
    render_cache_hits: int
    sampler_failures: int
    available: bool


class TickCache:
    """Snapshots and renders of one MetricsEndpoint, cached per tick.

    ``clock`` is monotonic seconds and only decides cache age; ``wall`` (unix seconds) is
    what responses without a snapshot (``GET /``) show as ``timestamp``. ``render_step_s``
    is how long a Prometheus render may hold the event loop at a time (0: it yields every
    8 components, as tests use to interleave a render with other requests).
    """

    def __init__(
        self,
        aggregator: Aggregator | None,
        *,
        tick_s: float = 1.0,
        sampler: Sampler | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        name: str = "metrics_endpoint",
        sample_timeout_s: float = 2.0,
        judge: HealthJudge | None = None,
        live: LiveFeed | None = None,
        render_step_s: float = RENDER_STEP_S,
    ) -> None:
        if tick_s < 0:
            raise ValueError(f"tick_s must be >= 0, got {tick_s!r}")
        self.name = name
        self.sample_timeout_s = sample_timeout_s
        self.tick_s = tick_s
        #: Seconds of work a render does between two yields to the event loop.
        self.render_step_s = render_step_s
        self.clock = clock
        self.wall = wall
        self._aggregator = aggregator
        self._sampler = sampler
        #: Judges each view's figures: health, and the alerts when it has an engine.
        self.judge = judge if judge is not None else HealthJudge()
        #: What ``GET /stream`` serves: each default-view snapshot, as it is built.
        self.live = live if live is not None else LiveFeed(name=name, tick_s=tick_s)
        self._unavailable: str | None = None
        #: view -> (when built, the snapshot, how long its build took), clock seconds.
        self._snapshots: dict[int, tuple[float, Snapshot, float]] = {}
        self._process: tuple[float, ProcessStats | None, str | None] | None = None
        self._snapshot_lock = anyio.Lock()
        self._render_lock = anyio.Lock()
        # Set (and replaced) when a build or render ends: whoever waits for one waits
        # here, all woken at once, never in a lock's queue (a lock is handed to one waiter
        # per loop turn: under load hundreds of waiters left one by one, seconds apart).
        self._snapshot_done = anyio.Event()
        self._render_done = anyio.Event()
        self._rendered: dict[bool, tuple[Snapshot, Exposition]] = {}
        # The snapshot's families are written directly, their per-component text reused
        # across ticks (prometheus/exposition.py); the registry holds every other
        # collector, which prometheus-client's writer renders after them.
        self._writer = ExpositionWriter()
        self._registry = CollectorRegistry(auto_describe=False)
        # Custom collectors are called once per tick, isolated (prometheus/custom.py); the
        # registry only replays what they gave.
        self._custom = CustomCollectors(reserved=exposed_names(self._writer.reference.describe()))
        self._figures: dict[str, FigureSource] = {}
        self._collected: tuple[float, CustomCollection] | None = None
        self._registry.register(CollectionView(self._custom, self.custom))
        self._built = self._snap_hits = self._renders = self._render_hits = 0
        self._stale_hits = 0
        self._background_builds = self._background_failures = 0
        #: While served (``serving()``): where the background builds run.
        self._refresher: TaskGroup | None = None
        #: A background build is scheduled and has not taken the snapshot lock yet.
        self._refreshing = False
        #: The last build raised: the next request builds itself (and sees the error)
        #: instead of being answered from the snapshot before it.
        self._failed = False
        #: How old a snapshot may be and still be served while the next one is built.
        self._stale_s = max(10 * tick_s, 2.0)
        self._sampler_failures = 0
        #: When the sample in flight began (clock), until its thread returns: a sample
        #: abandoned past its deadline still holds its thread, and no other is started.
        self._sampling: float | None = None
        #: Snapshots replaced by a newer one, with the builds they have waited through:
        #: let go of a part at a time by the next builds (``_release_steps``).
        self._retired: list[tuple[Snapshot, int]] = []

    def add_collector(self, collector: Collector, name: str | None = None) -> str:
        """Serve one more prometheus-client collector in ``/metrics`` and in
        ``/metrics/json``'s ``custom``; returns the name its errors are listed under."""
        self._collected = None
        return self._custom.add(collector, name)

    def add_builtin_collector(self, collector: Collector) -> None:
        """Serve the endpoint's own ``collector`` in ``/metrics`` beside the snapshot's
        families (the HTTP guards' counters). Unlike a custom collector it is read during
        the render, not once per tick in a worker thread, and is neither listed in
        ``/metrics/json``'s ``custom`` nor counted in the collector errors: it only reads
        counters and cannot fail. Its names are taken from the custom collectors."""
        self._custom.reserve(exposed_names(collector.collect()))
        self._registry.register(collector)

    def add_figures(self, name: str, source: FigureSource) -> None:
        """Show what ``await source()`` returns (JSON-able) as ``extra.<name>`` in
        ``/metrics/json``, refreshed once per tick; a failure is listed in ``errors``."""
        if name in self._figures:
            raise ValueError(f"figures {name!r} are already provided by another source")
        self._figures[name] = source
        self._collected = None

    def custom(self) -> CustomCollection:
        """The custom collectors' and figure sources' results of the latest tick."""
        return self._collected[1] if self._collected is not None else EMPTY

    # -- availability ---------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._aggregator is not None and self._unavailable is None

    def set_unavailable(self, detail: str) -> None:
        """From now on every figure request answers 503 with ``detail``."""
        self._unavailable = detail
        self._forget()

    def set_available(self) -> None:
        self._unavailable = None

    def _forget(self) -> None:
        self._snapshots.clear()
        self._rendered.clear()
        self._process = None
        self._collected = None

    def _require(self) -> Aggregator:
        if self._unavailable is not None:
            self.live.unavailable(self._unavailable)
            raise HarnessUnavailableError(self._unavailable)
        if self._aggregator is None:
            detail = f"no harness feeds metrics endpoint {self.name!r}"
            self.live.unavailable(detail)
            raise HarnessUnavailableError(detail)
        return self._aggregator

    # -- snapshots ------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """The service's serving lifetime (the app's lifespan enters it): meanwhile a
        request that finds the snapshot stale by less than its build took (younger than
        ``tick_s`` plus that build) is answered from it at once while the next one is
        built in the background, in a task group held here; on the way out a build under
        way is cancelled and awaited. Outside it (a bare service in a test or an
        embedding) such a request builds and waits, as one does with no snapshot or an
        older one.

        Entered again while entered (one service served by two apps), the inner entry
        leaves the background builds to the outer one.
        """
        if self._refresher is not None:
            yield
            return
        async with anyio.create_task_group() as tg:
            self._refresher = tg
            try:
                yield
            finally:
                self._refresher = None
                tg.cancel_scope.cancel()

    async def snapshot(self, view: ViewSeconds | None = None, *, fresh: bool = False) -> Snapshot:
        """The snapshot of ``view`` (the aggregator's default when None), at most tick_s old,
        or, while the next one is being built, the one before it (up to ``10 * tick_s``
        old, at least 2 s): a request never waits for a build another one started. While
        served (``serving()``) a request that finds the snapshot stale by less than its
        build took gets it too, and starts the next build in the background (steady
        traffic at a slow build: no request waits for it). One build at a time.

        ``fresh``: wait for a snapshot at most tick_s old instead (the endpoint's ticker,
        whose alert rules must step every tick).

        Raises ``HarnessUnavailableError`` when no harness feeds the service.
        """
        view = view or self._require().view
        while True:
            hit = self._fresh_snapshot(view)
            if hit is not None:
                self._snap_hits += 1
                return hit
            building = self._snapshot_lock.locked() or self._refreshing
            # The snapshot before the next one is what requests get while that is built
            # (a 10,000-component build takes a good part of a second, and /health must
            # not wait for it), unless it is older than the build may excuse.
            stale = None if fresh else self._stale_snapshot(view, self._stale_s)
            # Served, a request that finds the snapshot stale by less than its build took
            # (steady traffic does, at the tick's turn) starts the next build in the
            # background and is answered from it too; one after a longer pause, or after a
            # failed build (so that it sees the error), builds and waits.
            refresher = None if fresh or building or self._failed else self._refresher
            if refresher is not None and self._within_a_build(view):
                self._refreshing = building = True
                refresher.start_soon(self._refresh, view)
            if not building:
                break
            if stale is not None:
                self._stale_hits += 1
                return stale
            await self._snapshot_done.wait()
        async with self._snapshot_lock:
            return await self._build_and_wake(view)

    def _stale_snapshot(self, view: ViewSeconds, within_s: float) -> Snapshot | None:
        """The latest snapshot of ``view`` if it is younger than ``within_s``."""
        stale = self._snapshots.get(view)
        if stale is not None and self.clock() - stale[0] < within_s:
            return stale[1]
        return None

    def _within_a_build(self, view: ViewSeconds) -> bool:
        """Whether ``view``'s snapshot went stale less than its build took ago, so that an
        answer from it is at most ``tick_s`` and one build old. A quick build is waited
        for (the answer is of now, at little cost), and so is one after a longer pause (a
        reader back after a while gets figures of now, not of its previous visit)."""
        cached = self._snapshots.get(view)
        return cached is not None and self.clock() - cached[0] < self.tick_s + cached[2]

    async def _refresh(self, view: ViewSeconds) -> None:
        """Build ``view``'s next snapshot in the background (a task of ``serving()``).

        A failure is not raised into the task group (it would end the app's lifespan):
        it is logged and counted, and it makes the next request build the snapshot
        itself, which answers with the error as it would have without the background.
        """
        try:
            async with self._snapshot_lock:
                self._refreshing = False
                built = self._built
                await self._build_and_wake(view)
                self._background_builds += self._built - built
        except Exception:
            self._background_failures += 1
            _log.warning("%s: building a snapshot failed", self.name, exc_info=True)
        finally:
            if self._refreshing:  # cancelled before it began: whoever waits looks again
                self._refreshing = False
                self._wake_snapshot_waiters()

    async def _build_and_wake(self, view: ViewSeconds) -> Snapshot:
        """Build ``view``'s snapshot and wake whoever waits for it; the caller holds the
        snapshot lock."""
        try:
            snap = await self._build(view)
        except Exception:
            self._failed = True
            raise
        finally:
            self._wake_snapshot_waiters()
        self._failed = False
        return snap

    def _wake_snapshot_waiters(self) -> None:
        done, self._snapshot_done = self._snapshot_done, anyio.Event()
        done.set()

    async def _build(self, view: ViewSeconds) -> Snapshot:
        """Build the snapshot of ``view``; the caller holds the snapshot lock."""
        # Whoever held the lock may have built exactly this one meanwhile.
        hit = self._fresh_snapshot(view)
        if hit is not None:
            self._snap_hits += 1
            return hit
        began = self.clock()
        release = Pace(0, BUDGET_S)
        await finish_async(self._release_steps(release), release)
        process, error = await self._sample()
        custom = await self._collect_custom()
        agg = self._require()  # the harness may have gone while we sampled
        errors = [error] if error else []
        # One pace for the read and the judgement: the loop waits at most its budget
        # across the hand-over between the two.
        pace = Pace(256, BUDGET_S)
        figures = await agg.figures_async(
            process=process, errors=errors + custom.errors, view=view, pace=pace
        )
        # Rules step on the default view only, so one lifecycle serves every view.
        snap = await self.judge.judge_async(figures, step_alerts=view == agg.view, pace=pace)
        now = self.clock()
        old = self._snapshots.get(view)
        self._snapshots[view] = (now, snap, now - began)
        if old is not None:
            self._retired.append((old[1], 0))
        self._built += 1
        if view == agg.view:
            self.live.publish(snap)  # GET /stream's clients get the default view
        return snap

    def _release_steps(self, pace: Pace) -> Steps[None]:
        """Let go of the retired snapshots that nobody else holds any more, a part of
        their per-component tables at a time, yielding where ``pace`` says.

        Why: a 10,000-component snapshot is some 200,000 objects, and whoever drops the
        last reference to it frees all of them at once: 20 to 30 ms of the event loop,
        once per tick, wherever that happens to be (the next build, a render, a request).
        The service therefore keeps each snapshot it replaces and empties its tables
        here, at the next build. Only what the service alone holds is touched: a
        snapshot that a request, the render cache, the live feed or an embedder still
        holds (or a table of it that an answer in the making holds) is left whole, looked
        at again by the next builds, and after ``_RETIRED_BUILDS`` of them let go of
        as usual (its last holder frees it).
        """
        retired, self._retired = self._retired, []
        try:
            while retired:
                snap, builds = retired.pop()
                # References: the local name and getrefcount's argument; more is a holder.
                if sys.getrefcount(snap) > 2:
                    if builds < _RETIRED_BUILDS:
                        self._retired.append((snap, builds + 1))
                    continue
                for name in _SNAPSHOT_TABLES:
                    table = getattr(snap, name)
                    # The snapshot's field, the local name and the argument: no one else's.
                    if sys.getrefcount(table) == 3:
                        yield from drop_steps(table, pace.spent)
                    del table
        finally:  # a build cancelled midway leaves the rest to the next one
            self._retired += retired

    def _fresh_snapshot(self, view: ViewSeconds) -> Snapshot | None:
        cached = self._snapshots.get(view)
        if cached is not None and self.clock() - cached[0] < self.tick_s:
            return cached[1]
        return None

    async def _sample(self) -> tuple[ProcessStats | None, str | None]:
        """One process sample per tick, shared by every view: ``cpu_percent`` measures
        since the previous call, so sampling per view would shorten its interval."""
        if self._sampler is None:
            return None, None
        now = self.clock()
        if self._process is not None and now - self._process[0] < self.tick_s:
            return self._process[1], self._process[2]
        stats: ProcessStats | None = None
        error: str | None = None
        try:
            # A hung /proc read must not hang /health: past the deadline the thread is
            # abandoned and the snapshot goes out without process figures. While it is
            # still stuck no other thread is started: a hang costs one thread, not one
            # per tick.
            if self._sampling is not None:
                error = f"process sampler stuck for {now - self._sampling:.3g}s in one sample"
            else:
                self._sampling = now
                with anyio.move_on_after(self.sample_timeout_s):
                    stats = await anyio.to_thread.run_sync(
                        self._sample_in_thread, self._sampler, abandon_on_cancel=True
                    )
                if stats is None:
                    error = f"process sampler timed out after {self.sample_timeout_s:g}s"
        except Exception as exc:  # partial data beats no data (spec: Error Handling)
            error = f"process sampler failed: {describe_exception(exc)}"
        if error is not None:
            self._sampler_failures += 1
        self._process = (now, stats, error)
        return stats, error

    def _sample_in_thread(self, sampler: Sampler) -> ProcessStats:
        try:
            return sampler.sample()
        finally:
            self._sampling = None

    async def _collect_custom(self) -> CustomCollection:
        """Custom collectors (in a worker thread) and figure sources, once per tick and
        each under the sampler's deadline: a hung exporter must not hang ``/health``."""
        if not len(self._custom) and not self._figures:
            return EMPTY
        now = self.clock()
        if self._collected is not None and now - self._collected[0] < self.tick_s:
            return self._collected[1]
        deadline = self.sample_timeout_s
        families: list[Any] = []
        js: dict[str, Any] = {}
        errors: list[str] = []
        if len(self._custom):
            result = None
            with anyio.move_on_after(deadline):
                result = await anyio.to_thread.run_sync(
                    self._custom.collect, abandon_on_cancel=True
                )
            if result is None:
                errors.append(self._custom.timed_out(deadline))
            else:
                families, js, errs = result
                errors += errs
        extra: dict[str, Any] = {}
        for name, source in self._figures.items():
            try:
                with anyio.fail_after(deadline):
                    got = await source()
                extra[name] = msgspec.to_builtins(got)  # junk fails here, not in the response
            except TimeoutError:
                errors.append(f"figures {name!r} timed out after {deadline:g}s")
            except Exception as exc:
                errors.append(f"figures {name!r} failed: {describe_exception(exc)}")
        collected = CustomCollection(families, js, extra, errors)
        self._collected = (now, collected)
        return collected

    # -- Prometheus -----------------------------------------------------------------------

    async def prometheus(self, openmetrics: bool = False) -> bytes:
        """The exposition of the current snapshot as one bytes object (``exposition``
        joined: what tests and embedders read; ``/metrics`` sends the pieces)."""
        return (await self.exposition(openmetrics)).body()

    async def exposition(self, openmetrics: bool = False) -> Exposition:
        """The exposition of the current snapshot, rendered once per snapshot and format.

        Concurrent requests wait for the render in progress instead of starting another.
        """
        while True:
            snap = await self.snapshot()
            body = self._fresh_render(snap, openmetrics)
            if body is not None:
                return body
            if not self._render_lock.locked():
                break
            await self._render_done.wait()  # with every other waiter, not in the lock's queue
        async with self._render_lock:
            try:
                return await self._render(snap, openmetrics)
            finally:
                done, self._render_done = self._render_done, anyio.Event()
                done.set()

    async def _render(self, snap: Snapshot, openmetrics: bool) -> Exposition:
        """Render ``snap`` on the event loop, ``render_step_s`` per step; the caller holds
        the render lock.

        Not in a worker thread: the render is pure Python, so a thread would hold the GIL
        for most of it, and the loop would wait for the GIL at every switch (each of them
        up to ``sys.getswitchinterval()``, several per request). Shielded: a render begun
        is finished and kept even when the request that began it is cancelled (a client
        gone, a deadline), since every other request of the tick waits for it.
        """
        cached = self._fresh_render(snap, openmetrics)  # rendered while we waited?
        if cached is not None:
            return cached
        steps = self._writer.render_steps(
            snap, openmetrics=openmetrics, extra=self._registry, step_s=self.render_step_s
        )
        with anyio.CancelScope(shield=True):
            body = await finish_async(steps)
            self._rendered[openmetrics] = (snap, body)
            self._renders += 1
        return body

    def _fresh_render(self, snap: Snapshot, openmetrics: bool) -> Exposition | None:
        cached = self._rendered.get(openmetrics)
        if cached is not None and cached[0] is snap:
            self._render_hits += 1
            return cached[1]
        return None

    def exposition_statistics(self) -> ExpositionStatistics:
        """The direct writer's counters: blocks written and reused across renders."""
        return self._writer.statistics()

    def statistics(self) -> TickCacheStatistics:
        return TickCacheStatistics(
            snapshots_built=self._built,
            snapshot_cache_hits=self._snap_hits,
            stale_snapshot_hits=self._stale_hits,
            background_builds=self._background_builds,
            background_failures=self._background_failures,
            renders=self._renders,
            render_cache_hits=self._render_hits,
            sampler_failures=self._sampler_failures,
            available=self.available,
        )
