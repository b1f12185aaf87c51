"""Work written once as a generator of steps, run to the end at once or with the event
loop let in between the steps.

Building a snapshot reads every component, on the event loop (the aggregates are folded
there, so no worker thread may read them): with 10,000 components that is long enough to
stall every request behind it. The aggregator and the judge each write that walk once, as
a generator that yields every so many components; ``finish`` runs it without a loop (tests,
benchmarks), ``finish_async`` with a checkpoint at each yield.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

import anyio.lowlevel

__all__ = ("Steps", "finish", "finish_async")

T = TypeVar("T")
Steps = Generator[None, None, T]
"""A computation that yields where the event loop may run, and returns its result."""


def finish(steps: Steps[T]) -> T:
    """Run ``steps`` to the end and return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def finish_async(steps: Steps[T]) -> T:
    """Run ``steps`` to the end, letting the event loop run at each of its yields."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await anyio.lowlevel.checkpoint()
