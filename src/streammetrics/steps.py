"""Work written once as a generator of steps, run to the end at once or with the event
loop let in between the steps.

Building a snapshot reads every component, on the event loop (the aggregates are folded
there, so no worker thread may read them): with 10,000 components that is long enough to
stall every request behind it. The aggregator and the judge each write that walk once, as
a generator that yields where its ``Pace`` says the loop is due; ``finish`` runs it
without a loop (tests, benchmarks), ``finish_async`` with a checkpoint at each yield.

Why a time budget rather than a count alone: what one item costs differs a hundredfold
(a quiet component's kept figures against a changed one's three views and quantiles, a
rule's test of one instance), so no one count bounds how long the loop waits. A walk
takes its items in parts of 16 (``Pace.parts``) and asks its pace between two parts only:
a look at the clock per item would cost a tenth of what a quiet item costs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Sequence
from time import perf_counter
from typing import Any, Final, TypeVar

import anyio.lowlevel

__all__ = ("BUDGET_S", "NEVER", "Pace", "Steps", "drop_steps", "finish", "finish_async")

T = TypeVar("T")
Steps = Generator[None, None, T]
"""A computation that yields where the event loop may run, and returns its result."""

#: How long a walk holds the event loop before it lets it in, by default: a quarter of a
#: millisecond. A request waits behind one step of every walk under way (a build, a
#: render, a flush, a body being sent) and of every other request in flight: at 3 ms
#: steps, ten /health connections beside a 10,000-component scrape waited 20 to 30 ms at
#: the 99th percentile, at 1 ms about 14, at 0.5 ms about 11, at 0.25 ms about 10; the
#: yields a shorter step adds cost a few percent of the walk.
BUDGET_S: Final = 0.00025


class Pace:
    """When a walk lets the event loop in: at every ``every``-th item of a walk (0: never
    by count), and at the first look at the clock (every 16 items) once ``budget_s``
    has passed since the loop last ran (None: never by time).

    One pace may serve several walks one after another (the figures read, then the
    judgement and the alert rules of one snapshot): the time since the loop last ran is
    the pace's, whichever walk spent it. ``finish_async`` restarts it after each yield.
    """

    __slots__ = ("_deadline", "budget_s", "every")

    def __init__(self, every: int = 0, budget_s: float | None = None) -> None:
        self.every = every
        self.budget_s = budget_s
        self._deadline = math.inf
        self.restart()

    @property
    def active(self) -> bool:
        """Whether it ever lets the loop in (False: a walk run to the end at once)."""
        return bool(self.every) or self.budget_s is not None

    def restart(self) -> None:
        """The loop has just run: the budget starts again."""
        if self.budget_s is not None:
            self._deadline = perf_counter() + self.budget_s

    def parts(self, items: Sequence[T]) -> Iterator[tuple[bool, Sequence[T]]]:
        """``items`` in parts of at most 16 (cut at every ``every``-th item), each with
        whether to let the loop in before it; all in one part, never due, when the
        pace never lets the loop in."""
        if not self.active:
            yield False, items
            return
        n, every = len(items), self.every
        i = 0
        while i < n:
            j = min(i + _PART, n)
            if every:
                j = min(j, (i // every + 1) * every)
            due = i > 0 and ((every > 0 and i % every == 0) or perf_counter() >= self._deadline)
            yield due, items[i:j]
            i = j

    def spent(self) -> bool:
        """Whether the budget is spent (between pieces of work that are not items)."""
        return perf_counter() >= self._deadline


_PART: Final = 16

#: The pace of a walk run to the end at once: it never yields.
NEVER: Final = Pace()


#: Entries a dict loses between two looks at the clock in ``drop_steps``.
_DROP_PART: Final = 64


def drop_steps(table: dict[Any, Any], due: Callable[[], bool]) -> Steps[None]:
    """Empty ``table`` a part at a time, yielding whenever ``due()`` says so between parts.

    Why not let it go whole: whoever drops the last reference to a large table frees
    everything only it held in one C call (10,000 components' statuses are some 20 ms of
    the event loop); popped a part at a time, each entry is freed as it goes, and a walk
    on the loop can let it in between. Only a table nobody else reads may be emptied so."""
    while table:
        for _ in range(min(_DROP_PART, len(table))):
            table.popitem()
        if due():
            yield


def finish(steps: Steps[T]) -> T:
    """Run ``steps`` to the end and return what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def finish_async(steps: Steps[T], pace: Pace | None = None) -> T:
    """Run ``steps`` to the end, letting the event loop run at each of its yields
    (``pace``, the one the walk yields by, is restarted after each; not at the start:
    a pace shared with the walk before counts what that one spent since its last yield).

    Cancelled at a yield, the walk is closed there and then (its ``finally`` runs: the
    aggregator's read under way ends with it), not whenever it is collected."""
    try:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await anyio.lowlevel.checkpoint()
            if pace is not None:
                pace.restart()
    finally:
        steps.close()
