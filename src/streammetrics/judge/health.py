"""The health judgement: a score from 0.0 to 1.0, a status, and the reasons for both.

The formula is deliberately plain so that a person can check it by hand. Each
component starts at 1.0 and loses a *penalty* per problem:

==========================================================  =======
problem                                                     penalty
==========================================================  =======
stopped or failed                                           1.0
silent past ``heartbeat_timeout_s`` (once it sent one)      1.0
circuit breaker open                                        0.5
circuit breaker half_open                                   0.25
error rate (default window) over ``error_budget``           0.2
error rate over five times ``error_budget``                 0.6
a stalled input stream (see below), each                    0.5
==========================================================  =======

* a component's score is ``max(0, 1 - sum of its penalties)``; it is healthy at or
  above ``healthy_threshold``;
* the system score is the mean of the component scores (1.0 with no component), less
  0.1 for process memory over ``memory_limit_mb`` and 0.1 for CPU over
  ``cpu_limit_percent``, clamped to [0, 1];
* status: ``healthy`` at or above ``healthy_threshold`` with no critical alert firing,
  ``degraded`` at or above ``degraded_threshold``, ``unhealthy`` below; precedence
  unhealthy > degraded > healthy. Only ``healthy`` answers 200 on ``/health``.

A *stalled stream* is a binding with items waiting in its buffer while its consumer
has taken none of them (its processed + error count has not moved and the buffer has
not shrunk) for longer than ``stall_timeout_s``. The penalty goes to the consumer (the
binding's ``to_component``): work is queued for it and it is not doing it, whatever
the cause (a hung handler, a breaker held open, a consumer that died). A slow consumer
that still makes progress is *not* stalled; that is lag, which the ``ConsumerLag``
alert and the capacity recommendation report. A stream that simply carries nothing
is not stalled either: an idle API is not a fault, so "traffic dropped to zero" is
left to the ``ThroughputStopped`` warning rather than the score.

Every penalty is one ``Deduction`` in ``/health``'s ``reasons``, with the component
and the figures that caused it (``error_rate 0.12 > budget 0.05``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from ..snapshot import BreakerState, ComponentRunState, Deduction, Status

__all__ = (
    "PENALTIES",
    "HealthConfig",
    "component_health",
    "status_for",
    "stream_stall",
    "system_health",
)

Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

#: The penalty of each kind of problem (the table of the module docstring).
PENALTIES: Final[dict[str, float]] = {
    "down": 1.0,
    "breaker_open": 0.5,
    "breaker_half_open": 0.25,
    "error_budget": 0.2,
    "error_budget_x5": 0.6,
    "stalled_stream": 0.5,
    "memory": 0.1,
    "cpu": 0.1,
}


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the health judgement (the MetricsEndpoint's ``config.health``)."""

    error_budget: Ratio = 0.05
    """Error rate (over the default window) a component may have without penalty."""
    heartbeat_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """A component that sent heartbeats and then fell silent this long is down."""
    healthy_threshold: Ratio = 0.8
    """Score at or above which the system (or a component) is healthy."""
    degraded_threshold: Ratio = 0.5
    """Score at or above which the system is degraded rather than unhealthy."""
    memory_limit_mb: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Process RSS above which the score loses 0.1; None: no limit."""
    cpu_limit_percent: Annotated[float, msgspec.Meta(gt=0)] | None = None
    """Process CPU above which the score loses 0.1; None: no limit."""
    stall_timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = 60.0
    """Items waiting on a binding that its consumer has not touched for this long make
    the binding stalled; None: never judge stalls."""

    def __post_init__(self) -> None:
        if self.degraded_threshold > self.healthy_threshold:
            raise ValueError(
                f"degraded_threshold {self.degraded_threshold} is above healthy_threshold "
                f"{self.healthy_threshold}: a score could then be degraded and healthy at once"
            )


def component_health(
    name: str,
    *,
    status: ComponentRunState,
    error_rate: float,
    breaker: BreakerState,
    heartbeat_age: float | None,
    config: HealthConfig,
    extra: Sequence[Deduction] = (),
) -> tuple[float, list[Deduction]]:
    """A component's score and the deductions that made it; ``extra`` are deductions
    judged elsewhere (stalled input streams) that count against this component too."""
    out: list[Deduction] = []
    if status in ("stopped", "failed"):
        out.append(Deduction(name, f"component {status}", PENALTIES["down"]))
    elif heartbeat_age is not None and heartbeat_age > config.heartbeat_timeout_s:
        out.append(
            Deduction(
                name,
                f"no heartbeat for {heartbeat_age:.1f}s > timeout {config.heartbeat_timeout_s:g}s",
                PENALTIES["down"],
            )
        )
    if breaker == "open":
        out.append(Deduction(name, "circuit breaker open", PENALTIES["breaker_open"]))
    elif breaker == "half_open":
        out.append(Deduction(name, "circuit breaker half_open", PENALTIES["breaker_half_open"]))
    budget = config.error_budget
    if error_rate > budget:
        penalty = PENALTIES["error_budget_x5" if error_rate > 5 * budget else "error_budget"]
        out.append(Deduction(name, f"error_rate {error_rate:.3g} > budget {budget:g}", penalty))
    if extra:
        out += extra
    if not out:
        return 1.0, out
    score = max(0.0, 1.0 - sum(d.penalty for d in out))
    return round(score, 4), out


def stream_stall(
    stream: str,
    consumer: str | None,
    *,
    waiting: int,
    capacity: int | None,
    stalled_for: float,
    config: HealthConfig,
) -> Deduction | None:
    """The deduction for a binding whose ``waiting`` items its consumer has not taken
    for ``stalled_for`` seconds, or None while that is within ``stall_timeout_s``."""
    limit = config.stall_timeout_s
    if limit is None or waiting <= 0 or stalled_for <= limit:
        return None
    of = f"/{capacity}" if capacity else ""
    return Deduction(
        consumer,
        f"stream {stream} stalled: {waiting}{of} items waiting, none taken for "
        f"{stalled_for:.3g}s > {limit:g}s",
        PENALTIES["stalled_stream"],
    )


def system_health(
    component_scores: Sequence[float],
    *,
    memory_mb: float | None,
    cpu_percent: float | None,
    config: HealthConfig,
) -> tuple[float, list[Deduction]]:
    """The system score from its components' and the process's figures."""
    out: list[Deduction] = []
    score = sum(component_scores) / len(component_scores) if component_scores else 1.0
    lim = config.memory_limit_mb
    if lim is not None and memory_mb is not None and memory_mb > lim:
        out.append(
            Deduction(None, f"memory {memory_mb:.0f}MB > limit {lim:g}MB", PENALTIES["memory"])
        )
    lim = config.cpu_limit_percent
    if lim is not None and cpu_percent is not None and cpu_percent > lim:
        out.append(Deduction(None, f"cpu {cpu_percent:.0f}% > limit {lim:g}%", PENALTIES["cpu"]))
    score -= sum(d.penalty for d in out)
    return round(min(1.0, max(0.0, score)), 4), out


def status_for(score: float, *, critical_firing: bool, config: HealthConfig) -> Status:
    """The status of ``score``: unhealthy > degraded > healthy."""
    if score < config.degraded_threshold:
        return "unhealthy"
    if score < config.healthy_threshold or critical_firing:
        return "degraded"
    return "healthy"
