"""The health judgement: a score from 0.0 to 1.0, a status, and the reasons for both.

The formula is deliberately plain so that a person can check it by hand:

* each component starts at 1.0 and loses a *penalty* per problem:
  stopped or failed 1.0; silent past ``heartbeat_timeout_s`` (once it has sent a
  heartbeat) 1.0; breaker open 0.5, half-open 0.25; error rate over its budget 0.2,
  over five times its budget 0.6;
* a component is healthy at or above ``healthy_threshold``;
* the system score is the mean of the component scores (1.0 with no component), less
  0.1 for process memory over ``memory_limit_mb`` and 0.1 for CPU over
  ``cpu_limit_percent``;
* status: ``healthy`` at or above ``healthy_threshold`` with no critical alert firing,
  ``degraded`` at or above ``degraded_threshold``, ``unhealthy`` below; precedence
  unhealthy > degraded > healthy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec

from .snapshot import BreakerState, ComponentRunState, Deduction, Status

__all__ = ("HealthConfig", "component_health", "status_for", "system_health")

Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Thresholds of the health judgement (the MetricsEndpoint's ``config.health``)."""

    error_budget: Ratio = 0.05
    """Error rate (over the 60 s window) a component may have without penalty."""
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


def component_health(
    name: str,
    *,
    status: ComponentRunState,
    error_rate: float,
    breaker: BreakerState,
    heartbeat_age: float | None,
    config: HealthConfig,
) -> tuple[float, list[Deduction]]:
    """A component's score and the deductions that made it."""
    out: list[Deduction] = []
    if status in ("stopped", "failed"):
        out.append(Deduction(name, f"component {status}", 1.0))
    elif heartbeat_age is not None and heartbeat_age > config.heartbeat_timeout_s:
        out.append(
            Deduction(
                name,
                f"no heartbeat for {heartbeat_age:.1f}s > timeout {config.heartbeat_timeout_s:g}s",
                1.0,
            )
        )
    if breaker == "open":
        out.append(Deduction(name, "circuit breaker open", 0.5))
    elif breaker == "half_open":
        out.append(Deduction(name, "circuit breaker half_open", 0.25))
    budget = config.error_budget
    if error_rate > budget:
        penalty = 0.6 if error_rate > 5 * budget else 0.2
        out.append(Deduction(name, f"error_rate {error_rate:.3g} > budget {budget:g}", penalty))
    score = max(0.0, 1.0 - sum(d.penalty for d in out))
    return round(score, 4), out


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
        out.append(Deduction(None, f"memory {memory_mb:.0f}MB > limit {lim:g}MB", 0.1))
    lim = config.cpu_limit_percent
    if lim is not None and cpu_percent is not None and cpu_percent > lim:
        out.append(Deduction(None, f"cpu {cpu_percent:.0f}% > limit {lim:g}%", 0.1))
    score -= sum(d.penalty for d in out)
    return round(min(1.0, max(0.0, score)), 4), out


def status_for(score: float, *, critical_firing: bool, config: HealthConfig) -> Status:
    if score < config.degraded_threshold:
        return "unhealthy"
    if score < config.healthy_threshold or critical_firing:
        return "degraded"
    return "healthy"
