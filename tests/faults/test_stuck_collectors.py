"""Stuck collectors: a custom collector whose ``collect()`` never returns, and a process
sample stuck in ``/proc``, through a real endpoint on loopback. A hang costs one thread,
not one per tick; ``/health`` keeps answering every tick; the hang is listed in
``/metrics/json``'s ``errors``; and once it ends, the figures come back.

``/proc`` cannot be made to hang for real from a test, so that one hang is psutil's
``memory_info`` replaced by a call that waits on an event: the fault the mock stands in
for, nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import psutil
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streammetrics.components.metrics import MetricsEndpoint

pytestmark = pytest.mark.anyio

TICK_S = 0.05
DEADLINE_S = 0.1
TICKS = 25


class Stuck(Collector):
    """Blocks in ``collect()`` until ``release`` is set; then serves one gauge."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.calls = 0

    def collect(self) -> Iterator[Metric]:
        self.calls += 1
        self.release.wait(30)
        g = GaugeMetricFamily("stuck_collector_value", "Served once the collector returns")
        g.add_metric([], 1.0)
        yield g


class _Endpoint(MetricsEndpoint):
    extra: Sequence[Collector] = ()

    def collectors(self) -> Sequence[Collector]:
        return [*super().collectors(), *self.extra]


@asynccontextmanager
async def endpoint(*extra: Collector) -> AsyncIterator[tuple[MetricsEndpoint, httpx.AsyncClient]]:
    ep = _Endpoint(name="metrics", port=0, tick_s=TICK_S)
    ep.extra = extra
    ep.service.sample_timeout_s = DEADLINE_S  # a short deadline keeps the test short
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        async with httpx.AsyncClient(base_url=ep.url, timeout=5) as client:
            yield ep, client
        tg.cancel_scope.cancel()


async def _ticks(client: httpx.AsyncClient, n: int) -> list[int]:
    """``/health`` once per tick, ``n`` times; the most threads alive meanwhile, each."""
    peaks = []
    for _ in range(n):
        t0 = time.monotonic()
        got = await client.get("/health")
        assert got.status_code in (200, 503), got.text
        assert time.monotonic() - t0 < 2 * DEADLINE_S + 1.0  # answered, hang or no hang
        peaks.append(threading.active_count())
        await anyio.sleep(TICK_S)
    return peaks


async def _errors(client: httpx.AsyncClient) -> list[str]:
    errors: list[str] = (await client.get("/metrics/json")).json()["errors"]
    return errors


async def test_a_collector_stuck_in_collect_costs_one_thread_not_one_per_tick() -> None:
    release = threading.Event()
    stuck = Stuck(release)
    try:
        async with endpoint(stuck) as (_ep, client):
            await _ticks(client, 3)  # the worker threads a tick needs, started once
            before = threading.active_count()
            peaks = await _ticks(client, TICKS)
            assert max(peaks) <= before + 1, (before, peaks)
            assert stuck.calls == 1  # never called again while stuck
            errors = await _errors(client)
            assert errors == ["custom collectors: the previous collection is still running"]
            assert b"stuck_collector_value" not in (await client.get("/metrics")).content
            release.set()
            text = ""
            with anyio.fail_after(5):
                while "stuck_collector_value" not in text:
                    await anyio.sleep(TICK_S)
                    text = (await client.get("/metrics")).text
            assert await _errors(client) == []
            assert stuck.calls >= 2  # called again, once a tick, since it returned
    finally:
        release.set()


async def test_a_process_sample_stuck_in_proc_costs_one_thread_not_one_per_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    entered: list[float] = []
    real = psutil.Process.memory_info

    def hung_memory_info(self: psutil.Process) -> Any:
        entered.append(time.monotonic())
        release.wait(30)  # a read of /proc that does not come back
        return real(self)

    # psutil's oneshot() switches its memoized readers' caches on and off by these
    hung_memory_info.cache_activate = real.cache_activate  # type: ignore[attr-defined]
    hung_memory_info.cache_deactivate = real.cache_deactivate  # type: ignore[attr-defined]
    try:
        async with endpoint() as (_ep, client):
            await _ticks(client, 3)
            monkeypatch.setattr(psutil.Process, "memory_info", hung_memory_info)
            with anyio.fail_after(5):
                while not entered:  # a tick is built when asked for
                    await _ticks(client, 1)
            before = threading.active_count()
            peaks = await _ticks(client, TICKS)
            assert max(peaks) <= before + 1, (before, peaks)
            assert len(entered) == 1  # one sample stuck, and no other started behind it
            errors = await _errors(client)
            assert len(errors) == 1 and errors[0].startswith("process sampler stuck for"), errors
            body = (await client.get("/metrics/json")).json()
            assert body["performance"]["memory_usage_mb"] is None
            monkeypatch.undo()
            release.set()
            with anyio.fail_after(5):
                while (await _errors(client)) != []:  # noqa: ASYNC110 - no event announces a tick
                    await anyio.sleep(TICK_S)
            body = (await client.get("/metrics/json")).json()
            assert body["performance"]["memory_usage_mb"] > 0  # sampled again
    finally:
        release.set()
