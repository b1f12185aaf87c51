"""What the HTTP handlers talk to: snapshots and Prometheus renders, each made at most
once per tick and shared by every request of that tick.

Why a service between handlers and the aggregator: a scrape storm (many dashboards,
several Prometheus replicas) must cost one snapshot and one render per tick, not one per
request (``generate_latest`` formats every sample in Python: milliseconds per call for a
large registry). The process sample runs in a worker thread (a ``/proc`` read may hang);
the render runs on the event loop in steps of a few milliseconds, as the snapshot build does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

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
from ..steps import BUDGET_S, Pace, finish_async
from .live import LiveFeed

if TYPE_CHECKING:
    from ..aggregator import Aggregator
    from ..process_sampler import Sampler
    from ..snapshot import ProcessStats, Snapshot
    from ..windows import ViewSeconds

__all__ = ("FigureSource", "TickCache", "TickCacheStatistics")

#: Gives JSON-able figures for ``/metrics/json``'s ``extra`` (a plugin's ``figures``).
FigureSource = Callable[[], Awaitable[Mapping[str, Any]]]


class TickCacheStatistics(msgspec.Struct, frozen=True):
    """Counters of the caches, to check that a scrape storm really is one render a tick."""

    snapshots_built: int
    snapshot_cache_hits: int
    stale_snapshot_hits: int
    """Requests answered from the previous snapshot while the next one was being built."""
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
        self._snapshots: dict[int, tuple[float, Snapshot]] = {}
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
        #: How old a snapshot may be and still be served while the next one is built.
        self._stale_s = max(10 * tick_s, 2.0)
        self._sampler_failures = 0
        #: When the sample in flight began (clock), until its thread returns: a sample
        #: abandoned past its deadline still holds its thread, and no other is started.
        self._sampling: float | None = None

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

    async def snapshot(self, view: ViewSeconds | None = None) -> Snapshot:
        """The snapshot of ``view`` (the aggregator's default when None), at most tick_s old,
        or, while the next one is being built, the one before it (up to ``10 * tick_s``
        old, at least 2 s): a request never waits for a build another one started.

        Raises ``HarnessUnavailableError`` when no harness feeds the service.
        """
        view = view or self._require().view
        while True:
            hit = self._fresh_snapshot(view)
            if hit is not None:
                self._snap_hits += 1
                return hit
            if not self._snapshot_lock.locked():
                break
            # A build is under way: the snapshot before it is what every request gets
            # meanwhile (a 10,000-component build takes a good part of a second, and
            # /health must not wait for it), unless it is older than the build may excuse.
            stale = self._snapshots.get(view)
            if stale is not None and self.clock() - stale[0] < self._stale_s:
                self._stale_hits += 1
                return stale[1]
            await self._snapshot_done.wait()
        async with self._snapshot_lock:
            try:
                return await self._build(view)
            finally:
                done, self._snapshot_done = self._snapshot_done, anyio.Event()
                done.set()

    async def _build(self, view: ViewSeconds) -> Snapshot:
        """Build the snapshot of ``view``; the caller holds the snapshot lock."""
        # Whoever held the lock may have built exactly this one meanwhile.
        hit = self._fresh_snapshot(view)
        if hit is not None:
            self._snap_hits += 1
            return hit
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
        self._snapshots[view] = (self.clock(), snap)
        self._built += 1
        if view == agg.view:
            self.live.publish(snap)  # GET /stream's clients get the default view
        return snap

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
        """Render ``snap`` on the event loop, a few milliseconds per step; the caller holds
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
            renders=self._renders,
            render_cache_hits=self._render_hits,
            sampler_failures=self._sampler_failures,
            available=self.available,
        )
