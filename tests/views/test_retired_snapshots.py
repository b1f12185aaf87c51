"""Snapshots the tick cache replaces are let go of a part at a time by the next builds,
and only when nobody else holds them: a snapshot, or a table of one, that a caller still
holds is never touched."""

from __future__ import annotations

import pytest

from streammetrics.aggregator import Aggregator
from streammetrics.model.events import Event
from streammetrics.steps import Pace
from streammetrics.views.tick_cache import TickCache
from tests.support.http_app import FakeClock

pytestmark = pytest.mark.anyio

N = 300


def _service(clock: FakeClock) -> TickCache:
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall, max_components=N)
    events = [Event(f"c{i:03d}", "processed", count=i + 1, latency=0.01) for i in range(N)]
    assert agg.fold_events(events) == []
    clock.advance(1.0)
    return TickCache(agg, clock=clock.monotonic, wall=clock.wall)


async def _next(service: TickCache, clock: FakeClock) -> None:
    clock.advance(1.5)  # past the tick: the next request builds
    await service.snapshot()


def _whole(tables: tuple[dict[str, object], ...]) -> bool:
    return all(len(t) == N for t in tables)


async def test_a_snapshot_a_caller_holds_stays_whole_through_every_later_build(
    clock: FakeClock,
) -> None:
    service = _service(clock)
    held = await service.snapshot()
    tables = (held.detailed_components, held.component_histograms, held.latency_sums)
    for _ in range(6):  # past the builds a retired snapshot is looked at again
        await _next(service, clock)
        assert _whole(tables)
    assert held.detailed_components["c007"].items_processed == 8


async def test_a_table_held_without_its_snapshot_stays_whole(clock: FakeClock) -> None:
    """What an answer in the making holds (``/metrics/json`` takes the snapshot's tables,
    not the snapshot) is left whole, though the snapshot itself is nobody's any more."""
    service = _service(clock)
    components = (await service.snapshot()).detailed_components
    for _ in range(3):
        await _next(service, clock)
    assert len(components) == N and components["c010"].items_processed == 11


async def test_a_snapshot_nobody_holds_is_emptied_in_steps_by_a_later_build(
    clock: FakeClock,
) -> None:
    service = _service(clock)
    await service.snapshot()
    await _next(service, clock)  # the first snapshot is retired; the live feed has the new one
    current = await service.snapshot()
    steps = service._release_steps(Pace(budget_s=0.0))
    yields = sum(1 for _ in steps)
    # Three tables of N entries, let go of 64 at a time, the loop let in after each part.
    assert yields >= 3 * (N // 64)
    assert service._retired == []
    assert _whole((current.detailed_components, current.component_histograms))
