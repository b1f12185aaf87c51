"""Circuit breakers: every transition driven by a hand-moved clock, and the configuration a
blueprint gives one (real pipelines whose breakers trip: ``scenarios/test_breakers.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.breaker import BreakerConfig, CircuitBreaker
from streammetrics.errors import BlueprintError
from streammetrics.snapshot import BreakerState


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


Moves = list[tuple[BreakerState, BreakerState]]


def make(clock: Clock, **config: Any) -> tuple[CircuitBreaker, Moves]:
    moves: Moves = []
    b = CircuitBreaker(
        BreakerConfig(**config),
        clock=clock,
        on_transition=lambda old, new, _b: moves.append((old, new)),
    )
    return b, moves


# -- unit: each transition by hand ------------------------------------------------------------


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=3, failure_rate=None)
    for _ in range(2):
        b.record_failure()
    b.record_success()  # the streak is broken
    b.record_failure()
    b.record_failure()
    assert (b.state, b.consecutive, moves) == ("closed", 2, [])
    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    assert moves == [("closed", "open")]
    st = b.statistics()
    assert (st.failure_count, st.consecutive_failures, st.times_opened, st.transitions) == (
        5,
        3,
        1,
        1,
    )


def test_open_refuses_until_the_reset_timeout_then_half_opens() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=1, reset_timeout_s=10.0)
    b.record_failure()
    assert b.state == "open"
    assert b.wait_time() == 10.0
    clock.t += 9.999
    assert not b.allow()
    assert b.wait_time() == pytest.approx(0.001)
    assert b.state == "open"
    clock.t += 0.001  # exactly reset_timeout_s later
    assert b.wait_time() == 0.0
    assert b.allow()
    assert b.state == "half_open"
    assert moves == [("closed", "open"), ("open", "half_open")]
    assert b.statistics().rejected_waits == 1


def test_half_open_lets_a_limited_number_of_trials_through_and_closes_on_success() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=1, reset_timeout_s=5.0, half_open_max_calls=3)
    b.record_failure()
    clock.t += 5.0
    assert [b.allow() for _ in range(4)] == [True, True, True, False]  # 3 trials in flight
    assert b.wait_time() > 0
    b.record_success()
    b.record_success()
    assert b.state == "half_open"  # 2 of 3
    assert not b.allow()  # the third trial is still out
    b.record_success()
    assert b.state == "closed"
    assert moves[-1] == ("half_open", "closed")
    assert b.allow()
    assert b.consecutive == 0


def test_a_failed_trial_opens_it_again_for_a_full_timeout() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=1, reset_timeout_s=5.0, half_open_max_calls=2)
    b.record_failure()
    clock.t += 5.0
    assert b.allow()
    b.record_success()
    assert b.allow()
    b.record_failure()  # one success then a failure: open again
    assert b.state == "open"
    assert b.wait_time() == 5.0  # the timer starts over
    clock.t += 5.0
    assert b.allow()
    assert [m[1] for m in moves] == ["open", "half_open", "open", "half_open"]
    assert b.statistics().times_opened == 2


def test_trials_whose_outcome_never_comes_back_are_written_off() -> None:
    clock = Clock()
    b, _moves = make(clock, failure_threshold=1, reset_timeout_s=2.0, half_open_max_calls=1)
    b.record_failure()
    clock.t += 2.0
    assert b.allow()  # this trial's item is lost: no success, no failure
    assert not b.allow()
    clock.t += 1.0
    assert not b.allow()
    assert b.wait_time() == pytest.approx(1.0)
    clock.t += 1.0  # reset_timeout_s without an outcome
    assert b.allow()  # a new trial
    b.record_success()
    assert b.state == "closed"


def test_failure_rate_opens_it_once_min_calls_were_seen() -> None:
    clock = Clock()
    b, moves = make(clock, failure_threshold=100, failure_rate=0.5, min_calls=10, window_s=10)
    for i in range(9):  # 5 failures of 9 calls: over the rate, under min_calls
        (b.record_failure if i % 2 == 0 else b.record_success)()
    assert b.state == "closed"
    b.record_success()  # 10 calls, 5 failed: the rate is checked on failures only
    assert b.state == "closed"
    b.record_failure()  # 11 calls, 6 failed = 0.545 >= 0.5
    assert b.state == "open"
    assert moves == [("closed", "open")]


def test_failure_rate_forgets_calls_that_left_the_window() -> None:
    clock = Clock()
    b, _ = make(clock, failure_threshold=100, failure_rate=0.5, min_calls=4, window_s=10)
    for _ in range(3):
        b.record_failure()
    clock.t += 11.0  # those three left the 10 s window
    for _ in range(3):
        b.record_success()
    b.record_failure()  # 4 calls in the window, 1 failed: 0.25
    assert b.state == "closed"
    b.record_failure()
    b.record_failure()  # 6 calls, 3 failed: 0.5
    assert b.state == "open"


def test_closing_starts_the_rate_window_afresh() -> None:
    clock = Clock()
    b, _ = make(
        clock,
        failure_threshold=100,
        failure_rate=0.5,
        min_calls=2,
        reset_timeout_s=1.0,
        half_open_max_calls=1,
    )
    b.record_failure()
    b.record_failure()
    assert b.state == "open"
    clock.t += 1.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed"
    b.record_failure()  # alone in the new window: under min_calls
    assert b.state == "closed"


def test_failure_count_only_when_the_rate_is_null() -> None:
    clock = Clock()
    b, _ = make(clock, failure_threshold=4, failure_rate=None, min_calls=1)
    for _ in range(3):
        b.record_failure()
        b.record_success()
    assert b.state == "closed"  # 50 % failing, but never 4 in a row


def test_a_disabled_breaker_never_opens() -> None:
    clock = Clock()
    b, moves = make(clock, enabled=False, failure_threshold=1, min_calls=1)
    for _ in range(50):
        b.record_failure()
        assert b.allow()
    assert (b.state, moves, b.wait_time()) == ("closed", [], 0.0)
    assert b.statistics().failure_count == 50  # still counted


def test_defaults_are_sane() -> None:
    cfg = BreakerConfig()
    assert (cfg.enabled, cfg.failure_threshold, cfg.reset_timeout_s, cfg.half_open_max_calls) == (
        True,
        5,
        30.0,
        3,
    )
    assert (cfg.failure_rate, cfg.min_calls, cfg.window_s) == (0.5, 20, 60)


@pytest.mark.parametrize(
    ("breaker", "path", "says"),
    [
        ("{failure_threshold: 0}", "circuit_breaker.failure_threshold", ">= 1"),
        ("{reset_timeout_s: 0}", "circuit_breaker.reset_timeout_s", "> 0"),
        ("{half_open_max_calls: -1}", "circuit_breaker.half_open_max_calls", ">= 1"),
        ("{failure_rate: 1.5}", "circuit_breaker.failure_rate", "<= 1"),
        ("{window_s: 30}", "circuit_breaker.window_s", "Invalid enum value 30"),
        ("{reset_timeout: 5}", "circuit_breaker", "reset_timeout"),
    ],
)
def test_bad_breaker_config_is_refused_with_its_path(breaker: str, path: str, says: str) -> None:
    text = f"""
system:
  name: s
  components:
    - {{name: api, type: APIEndpoint, config: {{port: 0}}}}
    - {{name: proc, type: StreamProcessor, config: {{circuit_breaker: {breaker}}}}}
"""
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(text)
    assert info.value.path.startswith(f"system.components[1].config.{path}")
    assert says in str(info.value)


def test_a_breaker_on_a_component_that_takes_no_items_is_refused() -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(
            """
system:
  name: s
  components:
    - {name: src, type: Source, config: {rate: 10, circuit_breaker: {failure_threshold: 2}}}
"""
        )
    assert info.value.path == "system.components[0].config.circuit_breaker"
    assert info.value.value == {"failure_threshold": 2}
    assert "Source 'src' neither consumes items from a binding nor takes them in" in str(info.value)
