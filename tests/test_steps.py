"""The pace of a walk: parts of 16 cut at the count, due by count or by time, and a walk
run at once (no pace) in one part."""

from __future__ import annotations

import time

import anyio
import pytest

from streammetrics.steps import NEVER, Pace, Steps, finish, finish_async
from tests.support.loop import with_turns


def test_parts_are_cut_at_every_count_and_due_there() -> None:
    parts = list(Pace(every=5).parts(list(range(23))))
    assert [list(p) for _due, p in parts] == [
        list(range(k, min(k + 5, 23))) for k in range(0, 23, 5)
    ]
    assert [due for due, _p in parts] == [False, True, True, True, True]


def test_parts_are_at_most_16_and_due_once_the_budget_is_spent() -> None:
    pace = Pace(budget_s=0.0)  # spent at once: due before every part but the first
    parts = list(pace.parts(list(range(40))))
    assert [len(p) for _due, p in parts] == [16, 16, 8]
    assert [due for due, _p in parts] == [False, True, True]
    generous = Pace(budget_s=60.0)
    assert [due for due, _p in generous.parts(list(range(40)))] == [False, False, False]


def test_a_walk_without_pace_is_one_part_never_due() -> None:
    items = list(range(1000))
    assert [(due, len(p)) for due, p in NEVER.parts(items)] == [(False, 1000)]
    assert not NEVER.active
    assert not NEVER.spent()


def _slow_walk(pace: Pace, n: int, item_s: float) -> Steps[int]:
    done = 0
    for due, part in pace.parts(list(range(n))):
        if due:
            yield
        for _ in part:
            time.sleep(item_s)
            done += 1
    return done


@pytest.mark.anyio
async def test_the_loop_is_let_in_by_the_budget_and_the_walk_still_ends() -> None:
    """Items of 0.5 ms under a 2 ms budget: the loop runs every few items, however
    the count says (none here), and the walk returns what it did."""
    pace = Pace(budget_s=0.002)
    got, turns = await with_turns(finish_async(_slow_walk(pace, 200, 0.0005), pace))
    assert got == 200
    # 100 ms of items, a look at the clock every 16 (8 ms): at least one turn per look
    # after the first, whatever the machine's speed.
    assert turns >= 200 // 16 - 1
    assert finish(_slow_walk(NEVER, 20, 0.0)) == 20


@pytest.mark.anyio
async def test_a_walk_cancelled_between_steps_is_closed() -> None:
    closed = []

    def walk() -> Steps[None]:
        try:
            while True:
                yield
        finally:
            closed.append(True)

    with anyio.move_on_after(0.05):
        await finish_async(walk(), Pace(every=1))
    assert closed == [True]
