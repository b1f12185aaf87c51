"""Circuit breakers around a component's work, the Resilience4j way.

closed → open after ``failure_threshold`` consecutive failures, or when the failure
rate over the window reaches ``failure_rate`` (once ``min_calls`` calls were seen in
it; a time window, so a breaker can open on so many failures a minute, not only on a
share of the last N calls); open → half_open after
``reset_timeout_s``; half_open → closed after ``half_open_max_calls`` successes, back
to open on any failure. While open, the component stops taking items: they wait in
the binding (bounded), so nothing is lost and the producer feels backpressure.

Half-open lets at most ``half_open_max_calls`` trial calls through at a time. A trial
whose outcome never comes back (its item was cancelled, or handled without being
counted) would hold the breaker half-open for ever; after ``reset_timeout_s`` without
an outcome such trials are written off and new ones are let through, as
Resilience4j's ``maxWaitDurationInHalfOpenState`` does.

The breaker is driven by outcomes (``record_success`` / ``record_failure``, which the
component's probe calls for every item it counts) and by callers asking ``allow()``
before they take an item; the clock is passed in so tests drive time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Final, Literal

import msgspec

from .snapshot import BreakerState
from .windows import RollingWindow

__all__ = ("BREAKER_CODES", "BreakerConfig", "BreakerStatistics", "CircuitBreaker")

#: The number of each breaker state wherever one is a number: the
#: ``circuit_breaker_state`` gauge (as the seed defined it) and the ``breaker_state``
#: figure of alert rules. Its keys are every state a breaker can be in.
BREAKER_CODES: Final[dict[BreakerState, int]] = {"closed": 0, "open": 1, "half_open": 2}


class BreakerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A component's ``config.circuit_breaker`` in the blueprint."""

    enabled: bool = True
    """False: the component's work is never cut off."""
    failure_threshold: Annotated[int, msgspec.Meta(ge=1)] = 5
    """Consecutive failures that open the breaker."""
    failure_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = 0.5
    """Failure ratio over ``window_s`` that opens it too; null: count only."""
    window_s: Literal[10, 60, 300] = 60
    """Window of the failure rate."""
    min_calls: Annotated[int, msgspec.Meta(ge=1)] = 20
    """Calls needed in the window before the rate is trusted."""
    reset_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds open before trial calls are let through (half_open)."""
    half_open_max_calls: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Successful trial calls that close it again."""


class BreakerStatistics(msgspec.Struct, frozen=True):
    state: BreakerState
    failure_count: int
    """Failures recorded over the breaker's life (``BreakerStatus.failure_count`` in a
    snapshot counts trips instead: ``times_opened``)."""
    consecutive_failures: int
    transitions: int
    times_opened: int
    """Transitions into ``open`` (from closed or half_open)."""
    rejected_waits: int
    """``allow()`` calls refused: open, or half-open with every trial in flight."""


Transition = Callable[[BreakerState, BreakerState, "CircuitBreaker"], None]


class CircuitBreaker:
    """One component's breaker. Not thread-safe: it lives on the event loop."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self.clock = clock
        self.on_transition = on_transition
        self.state: BreakerState = "closed"
        self.failure_count = 0
        self.consecutive = 0
        self.transitions = 0
        self.waits = 0
        self.times_opened = 0
        self._opened_at = 0.0
        self._trials = 0
        self._trial_ok = 0
        self._trial_at = 0.0
        self._window = RollingWindow(clock())

    def _to(self, state: BreakerState) -> None:
        old, self.state = self.state, state
        self.transitions += 1
        if state == "open":
            self._opened_at = self.clock()
            self.times_opened += 1
        if state == "half_open":
            self._trials = self._trial_ok = 0
        if state == "closed":
            self.consecutive = 0
            self._window = RollingWindow(self.clock())
        if self.on_transition is not None:
            self.on_transition(old, state, self)

    def wait_time(self) -> float:
        """Seconds until a call may go through (0.0: now)."""
        if self.state == "open":
            return max(0.0, self._opened_at + self.config.reset_timeout_s - self.clock())
        if self.state == "half_open" and self._trials >= self.config.half_open_max_calls:
            # trials in flight: look again soon, and at the latest when they are written off
            left = self._trial_at + self.config.reset_timeout_s - self.clock()
            return max(0.0, min(1.0, left))
        return 0.0

    def allow(self) -> bool:
        """May a call go through now? Moves open → half_open when the timeout has passed."""
        if not self.config.enabled or self.state == "closed":
            return True
        if self.state == "open":
            if self.wait_time() > 0:
                self.waits += 1
                return False
            self._to("half_open")
        if self._trials >= self.config.half_open_max_calls:
            if self.clock() - self._trial_at < self.config.reset_timeout_s:
                self.waits += 1
                return False
            self._trials = self._trial_ok  # outcomes that never came back: written off
        self._trials += 1
        self._trial_at = self.clock()
        return True

    def record_success(self) -> None:
        self.consecutive = 0
        if not self.config.enabled:
            return
        if self.state == "half_open":
            self._trial_ok += 1
            if self._trial_ok >= self.config.half_open_max_calls:
                self._to("closed")
            return
        if self.config.failure_rate is not None:
            self._window.add(self.clock(), processed=1)

    def record_failure(self) -> None:
        self.failure_count += 1
        self.consecutive += 1
        cfg = self.config
        if not cfg.enabled:
            return
        if self.state == "half_open":
            self._to("open")
            return
        if self.state == "open":
            return
        now = self.clock()
        self._window.add(now, errors=1)
        if self.consecutive >= cfg.failure_threshold:
            self._to("open")
            return
        if cfg.failure_rate is not None:
            v = self._window.view(now, cfg.window_s)
            if v.processed + v.errors >= cfg.min_calls and v.error_rate >= cfg.failure_rate:
                self._to("open")

    def statistics(self) -> BreakerStatistics:
        return BreakerStatistics(
            state=self.state,
            failure_count=self.failure_count,
            consecutive_failures=self.consecutive,
            transitions=self.transitions,
            times_opened=self.times_opened,
            rejected_waits=self.waits,
        )
