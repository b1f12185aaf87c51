"""The bus's flush in steps: the probes in parts, each part's counts folded before the loop
is let in, nothing lost or counted twice across the yields."""

from __future__ import annotations

import anyio
import pytest

from streammetrics.bus import EventBus
from streammetrics.steps import Pace
from tests.support.loop import with_turns
from tests.support.sinks import Recorder


def _bus(n: int) -> tuple[EventBus, Recorder]:
    bus = EventBus()
    r = Recorder()
    bus.subscribe(r)
    for i in range(n):
        bus.probe(f"c{i:03d}").processed(i + 1)
    return bus, r


def test_flush_steps_yield_between_parts_and_fold_every_count_once() -> None:
    """A budget spent at once: a yield before every part of 16 probes but the first; what
    a probe counts while the walk is under way is in this flush if its part is still to
    come, in the next one otherwise, never in both."""
    bus, r = _bus(100)
    steps = bus.flush_steps(Pace(budget_s=0.0))
    yields = 0
    for _ in steps:
        yields += 1
        if yields == 1:
            folded = len(r.deltas)
            assert 0 < folded < 100  # the first part's counts are folded before the yield
            bus.probe("c000").processed(1000)  # its part is done: the next flush has it
            bus.probe("c099").processed(1000)  # its part is to come: this flush has it
    assert yields == 6  # 100 probes in 7 parts
    bus.flush()
    totals: dict[str, int] = {}
    for d in r.deltas:
        totals[d.component] = totals.get(d.component, 0) + d.processed
    expected = {f"c{i:03d}": i + 1 for i in range(100)}
    expected["c000"] += 1000
    expected["c099"] += 1000
    assert totals == expected
    assert bus.statistics().flushes == 2


@pytest.mark.anyio
async def test_flush_async_lets_the_loop_in_and_pulls_every_probe() -> None:
    """10,000 probes flushed on the loop: the loop runs during the flush (its default
    budget), and every probe's count reaches the sink."""
    bus, r = _bus(10_000)
    with anyio.fail_after(30):
        _, turns = await with_turns(bus.flush_async())
    assert turns >= 1
    assert sum(d.processed for d in r.deltas) == sum(range(1, 10_001))
    assert len({d.component for d in r.deltas}) == 10_000
