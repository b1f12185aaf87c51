"""Shared by the HTTP tests: a hand-driven clock, a seeded aggregator, a real server for an
app, and one request to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import anyio
import httpx
from litestar import Litestar

from streammetrics.aggregator import Aggregator
from streammetrics.http.app import create_app
from streammetrics.http.server import serve
from streammetrics.model.events import Event
from streammetrics.process_sampler import Sampler
from streammetrics.snapshot import ProcessStats
from streammetrics.views.tick_cache import TickCache

#: Where the seeded system's clock stands when the tests query it.
T0: Final = 1000.0
AGE: Final = 20.0
WALL0: Final = 1_700_000_000.0
#: What ``seed`` folds; the tests compare the responses with these.
API_DONE, API_ERRORS, STORE_DONE, PAY_DONE = 1500, 2, 1450, 1
API_LATENCIES: Final = (0.02, 0.5)


class FakeClock:
    """Monotonic and wall time that move only when a test says so."""

    def __init__(self, mono: float = T0, wall: float = WALL0) -> None:
        self.mono = mono
        self.wall_at_mono0 = wall - mono

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.wall_at_mono0

    def advance(self, seconds: float) -> None:
        self.mono += seconds


class FixedSampler:
    def __init__(self, stats: ProcessStats) -> None:
        self.stats = stats

    def sample(self) -> ProcessStats:
        return self.stats


class BrokenSampler:
    def sample(self) -> ProcessStats:
        raise OSError("no /proc here")


def seed(clock: FakeClock) -> Aggregator:
    """A three-component system folded at T0, read AGE seconds later.

    task_api: 1500 done on stream ``input`` and 2 errors, two latencies; task_store: 1450
    done; payments: 1 done and its breaker open (score 0.5, so not healthy); one open
    span; three malformed reports; a registered binding with a buffer.
    """
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall)
    agg.register_component("task_api", "FastAPIEndpoint")
    agg.register_component("task_store", "Store")
    agg.register_stream(
        "task_api->task_store",
        from_component="task_api",
        to_component="task_store",
        stream_name="input",
        buffer=lambda: (3, 100),
    )
    rejected = agg.fold_events(
        [
            Event(
                "task_api", "processed", count=API_DONE, latency=API_LATENCIES[0], stream="input"
            ),
            Event("task_api", "error", count=API_ERRORS, latency=API_LATENCIES[1], detail="boom"),
            Event("task_store", "processed", count=STORE_DONE),
            Event("payments", "processed", count=PAY_DONE),
            Event("payments", "breaker", detail="open"),
            Event("task_api", "span_start", trace_id="t1", span_id="s1"),
        ]
    )
    assert rejected == []
    agg.reject("malformed", 3)
    clock.advance(AGE)
    return agg


def seed_many(clock: FakeClock, n: int) -> Aggregator:
    """``n`` components ``c0000``, ``c0001``, ... each with a timed count of its own
    (``i + 1`` processed at 10 ms), folded one second before the clock's now: a body of
    about 2 kB each in ``/metrics``."""
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall, max_components=n)
    events = [Event(f"c{i:04d}", "processed", count=i + 1, latency=0.01) for i in range(n)]
    assert agg.fold_events(events) == []
    clock.advance(1.0)
    return agg


def service_for(
    agg: Aggregator | None,
    clock: FakeClock,
    *,
    sampler: Sampler | None = None,
    tick_s: float = 1.0,
) -> TickCache:
    return TickCache(
        agg,
        tick_s=tick_s,
        sampler=sampler if sampler is not None else FixedSampler(ProcessStats(512.0, 25.5)),
        clock=clock.monotonic,
        wall=clock.wall,
        name="system_metrics",
    )


@asynccontextmanager
async def running(
    app: Litestar, component: str = "system_metrics"
) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn server on a free loopback port, and a client for it."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            partial(
                serve, app, host="127.0.0.1", port=0, component=component, shutdown_timeout_s=1.0
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            yield client
        tg.cancel_scope.cancel()


async def get_once(service: TickCache, path: str, **kwargs: Any) -> httpx.Response:
    """One GET of ``path`` (``kwargs``: the request's own) from the app of ``service``, on a
    real server started for it and stopped after."""
    async with running(create_app(service)) as client:
        return await client.get(path, **kwargs)
