"""Whether a long computation lets the event loop run other tasks while it works."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import anyio
import anyio.lowlevel

T = TypeVar("T")


async def with_turns(work: Awaitable[T]) -> tuple[T, int]:
    """Await ``work`` while another task counts its turns of the event loop: (what ``work``
    returned, how many times the other task ran in between)."""
    ticks = 0

    async def count_turns() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(count_turns)
        await anyio.lowlevel.checkpoint()
        before = ticks
        got = await work
        turns = ticks - before
        tg.cancel_scope.cancel()
    return got, turns
