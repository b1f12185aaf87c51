"""The Source component: synthetic, reproducible load for demos and tests.

Everything about the items a Source makes is a function of its config, so a test can
assert exact figures: failures are spread by error diffusion (after ``n`` items exactly
``floor(n * error_ratio)`` have failed), routes go round-robin, and values and latencies
come from a ``random.Random(seed)``.

Pacing is by elapsed time, not by a sleep per item: a tick sends ``batch`` items once
they are due, so a Source reaches high rates while sleeping only ``rate / batch`` times
a second, and a late wake-up (or a full binding) is made up by sending batches back to
back, at most one second's worth, so a Source that was held back does not then burst.
What is owed beyond that (after a stalled event loop, a GC pause, a SIGSTOP) is
forgiven: the schedule moves on by the forgiven items, and the Source is back at its
rate as soon as the catch-up is sent. The clock and the sleep are the Source's
attributes (read when ``run`` starts), so a test can jump time forward by hand.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
import msgspec
from anyio.abc import TaskStatus
from msgspec import Meta

from .base import FAIL_MARK, Component, Context

__all__ = ("Source", "SourceConfig", "SourceStatistics")

#: Float noise allowance when counting failures and items due, so that 0.29 * 100 is 29,
#: not 28.
_EPS = 1e-9


class SourceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    rate: Annotated[float, Meta(gt=0, le=10_000_000)] = 100.0
    """Target items per second (a binding that is full slows the Source down)."""
    error_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """Fraction of items marked ``"fail": true``; the downstream Processor counts them
    as errors. Spread evenly and exactly: after n items, floor(n * ratio) failed."""
    latency_ms: Annotated[float, Meta(ge=0)] = 5.0
    """Mean of the simulated per-item latency observed on the Source's own probe."""
    latency_jitter_ms: Annotated[float, Meta(ge=0)] = 0.0
    """Half-width of the uniform jitter added to ``latency_ms`` (clamped at 0)."""
    seed: int = 0
    """Seed of values and latencies: the same seed gives the same items."""
    limit: Annotated[int, Meta(ge=0)] | None = None
    """Stop after this many items; the Source then returns and its outputs close, so
    the pipeline downstream drains and finishes. Null: run until stopped."""
    batch: Annotated[int, Meta(ge=1, le=100_000)] = 10
    """Most items sent per tick; the tick interval is ``batch / rate`` seconds."""
    routes: list[str] = []
    """Values of each item's ``route``, taken round-robin (a Controller routes on it);
    empty: ``route`` is null."""


class SourceStatistics(msgspec.Struct, frozen=True):
    sent: int
    """Items made (and sent down every output) so far."""
    failing: int
    """Of those, items marked to fail."""
    done: bool
    """True once ``limit`` items were sent."""


class Source(Component):
    """Makes items at ``rate`` per second and sends each down every output."""

    type_name = "Source"
    Config = SourceConfig

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.config: SourceConfig = ctx.config
        self.clock: Callable[[], float] = time.monotonic
        """Seconds, monotonic: what the pacing measures elapsed time with."""
        self.sleep: Callable[[float], Awaitable[None]] = anyio.sleep
        """Waits that many seconds (of ``clock``) until the next batch is due."""
        self._rng = random.Random(self.config.seed)
        self._sent = 0
        self._failing = 0
        self._done = False

    def statistics(self) -> SourceStatistics:
        return SourceStatistics(sent=self._sent, failing=self._failing, done=self._done)

    def _item(self, n: int) -> dict[str, Any]:
        cfg = self.config
        fail = math.floor((n + 1) * cfg.error_ratio + _EPS) > math.floor(n * cfg.error_ratio + _EPS)
        route = cfg.routes[n % len(cfg.routes)] if cfg.routes else None
        return {
            "id": n,
            "value": round(self._rng.uniform(0.0, 100.0), 3),
            "route": route,
            FAIL_MARK: fail,
        }

    def _latency(self) -> float:
        cfg = self.config
        jitter = self._rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
        return max(0.0, cfg.latency_ms + jitter) / 1000.0

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        probe = self.ctx.probe
        send = self.ctx.send
        limit = cfg.limit
        max_debt = max(cfg.batch, math.ceil(cfg.rate))
        clock, sleep = self.clock, self.sleep
        task_status.started()
        start = clock()
        # Items the schedule since ``start`` counted as due but that were forgiven: the
        # schedule owes ``floor(elapsed * rate) - forgiven`` items, of which ``_sent`` went.
        forgiven = 0
        while limit is None or self._sent < limit:
            want = cfg.batch if limit is None else min(cfg.batch, limit - self._sent)
            now = clock()
            # _EPS: the wake-up at the due time must find the batch due, not a hair short.
            due = math.floor((now - start) * cfg.rate + _EPS) - forgiven - self._sent
            if due > max_debt:
                forgiven += due - max_debt
                due = max_debt
            if due < want:
                await sleep(max(0.0, start + (forgiven + self._sent + want) / cfg.rate - now))
                continue
            for _ in range(want):
                item = self._item(self._sent)
                self._sent += 1
                if item[FAIL_MARK]:
                    self._failing += 1
                probe.processed(latency=self._latency())
                await send(item)
        self._done = True
