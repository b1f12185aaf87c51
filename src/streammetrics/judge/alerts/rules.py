"""Alert rules as a blueprint writes them, the rule set every endpoint has, and the
rules behind the recommendations.

A rule is a condition over named figures (``figures``) in the expression language of
``expressions``, that must hold for ``for`` before it fires, like a Prometheus alerting
rule. Recommendations are rules too (with their own ``for``), whose firing instances
become advice that names the figure that triggered it and its value.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ...model.types import DurationError, parse_duration
from ..health import HealthConfig
from .expressions import Compiled, RuleSyntaxError, compile_expr
from .figures import ALL_FIGURES, SCOPE_FIGURES, Scope

__all__ = ("Advice", "AlertRule", "advice", "builtin_rules")


class AlertRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One entry of a MetricsEndpoint's ``config.alerts``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    """Alert name, as in Prometheus (``HighErrorRate``)."""
    expr: str
    """Condition over figures, e.g. ``error_rate > 0.05``."""
    for_: str | float = msgspec.field(name="for", default=0.0)
    """How long the condition must hold before the alert fires (``2m``, ``30s``)."""
    level: Literal["warning", "critical"] = "warning"
    """A firing critical alert keeps the system from being ``healthy``."""
    component: str | None = None
    """Evaluate for this component only (for a stream rule: this stream key)."""
    scope: Scope | None = None
    """system, component or stream; inferred from the figures used when omitted
    (component first: ``error_rate`` alone is per component)."""
    message: str | None = None
    """Text of the alert; ``{component}``, ``{value}`` and ``{name}`` are filled in."""

    def __post_init__(self) -> None:
        # Compiled here so that `streammetrics validate` rejects a bad rule with its path.
        try:
            self.compile()
        except RuleSyntaxError as exc:
            raise ValueError(f"alert rule {self.name!r}: expr: {exc}") from None
        try:
            parse_duration(self.for_)
        except DurationError as exc:
            raise ValueError(f"alert rule {self.name!r}: for: {exc}") from None
        if self.component is not None and self.resolved_scope() == "system":
            raise ValueError(
                f"alert rule {self.name!r}: component {self.component!r} given for a "
                "system rule; a system rule has one instance, the system"
            )

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_)

    def resolved_scope(self) -> Scope:
        """The scope given, or the first of component, system, stream whose figures
        include every name the expression uses."""
        if self.scope is not None:
            return self.scope
        _fn, used = compile_expr(self.expr, ALL_FIGURES)
        scopes: tuple[Scope, ...] = ("component", "system", "stream")
        if self.component is not None:
            scopes = ("component", "stream")
        for scope in scopes:
            if all(u in SCOPE_FIGURES[scope] for u in used):
                return scope
        if self.component is not None:
            raise RuleSyntaxError(
                f"figures {sorted(set(used))} of {self.expr!r} are not all component "
                "figures nor all stream figures, and a rule with a component is evaluated "
                "for one component or stream"
            )
        raise RuleSyntaxError(
            f"figures {sorted(set(used))} of {self.expr!r} do not share one scope; "
            "give the rule a scope (system, component or stream)"
        )

    def compile(self) -> tuple[Compiled, list[str]]:
        """The evaluator, and the figure names it reads (the first is the alert's value)."""
        return compile_expr(self.expr, SCOPE_FIGURES[self.resolved_scope()])


def builtin_rules(health: HealthConfig) -> list[AlertRule]:
    """The rule set every endpoint has (thresholds from its health config)."""
    b = health.error_budget
    rules = [
        AlertRule(
            "ComponentDown",
            "up == 0",
            level="critical",
            message="component {component} is down (stopped, failed or silent)",
        ),
        AlertRule(
            "HighErrorRate",
            f"error_rate > {b}",
            for_="1m",
            message="error rate {value:.3g} of {component} over budget " + f"{b:g}",
        ),
        AlertRule(
            "VeryHighErrorRate",
            f"error_rate > {min(1.0, 5 * b)}",
            for_="1m",
            level="critical",
            message="error rate {value:.3g} of {component} over five times its budget",
        ),
        AlertRule(
            "CircuitBreakerOpen",
            "breaker_open == 1",
            message="circuit breaker of {component} is open",
        ),
        AlertRule(
            "ThroughputStopped",
            "message_rate == 0 and total_messages > 0 and producer_up == 1",
            for_="1m",
            scope="stream",
            message="stream {component} had traffic and has carried nothing for a minute "
            "while its producer runs",
        ),
        AlertRule(
            "ConsumerLag",
            "buffer_ratio > 0.8 or consumer_lag > 10000",
            for_="1m",
            scope="stream",
            message="consumer of {component} is behind: backlog {value:.3g}",
        ),
        AlertRule(
            "EventSourceDown",
            "source_up == 0",
            scope="stream",
            message="event source of stream {component} cannot read (see /health reasons)",
        ),
        AlertRule(
            "SystemUnhealthy",
            f"health_score < {health.healthy_threshold}",
            for_="2m",
            level="critical",
            message="system health degraded: score {value:.2f}",
        ),
    ]
    if health.memory_limit_mb is not None:
        rules.append(
            AlertRule(
                "MemoryHigh",
                f"memory_usage_mb > {health.memory_limit_mb}",
                for_="1m",
                scope="system",
                message="High memory usage detected: {value:.0f} MB",
            )
        )
    if health.cpu_limit_percent is not None:
        rules.append(
            AlertRule(
                "CpuHigh",
                f"cpu_usage_percent > {health.cpu_limit_percent}",
                for_="1m",
                scope="system",
                message="High CPU usage detected: {value:.0f}%",
            )
        )
    return rules


class Advice(msgspec.Struct, frozen=True):
    """A recommendation: the rule that raises it, and what it says while it fires."""

    rule: AlertRule
    type: Literal["performance", "reliability", "capacity"]
    figure: str
    """The figure named in the recommendation, with its value."""
    text: str
    """``{component}`` and ``{value}`` are filled in, as in an alert message."""


def advice(health: HealthConfig) -> list[Advice]:
    """The recommendations every endpoint gives (thresholds from its health config)."""
    out = [
        Advice(
            AlertRule("rec_buffer", "buffer_ratio > 0.8", for_="1m", scope="stream"),
            "capacity",
            "buffer_ratio",
            "binding {component} has been over 80% full for a minute ({value:.0%} now): "
            "add consumers or raise its buffer",
        ),
        Advice(
            AlertRule("rec_flap", "breaker_flaps >= 4"),
            "reliability",
            "breaker_flaps",
            "breaker of {component} changed state {value:.0f} times in 5 minutes: "
            "raise its circuit_breaker.reset_timeout_s so the cause has time to clear",
        ),
        Advice(
            AlertRule("rec_errors", f"error_rate > {health.error_budget}", for_="1m"),
            "reliability",
            "error_rate",
            "{component} fails {value:.1%} of its items: look at its last_error",
        ),
        Advice(
            AlertRule("rec_latency", "p99 > 1"),
            "performance",
            "p99",
            "p99 latency of {component} is {value:.2f}s: profile it or add workers",
        ),
    ]
    if health.memory_limit_mb is not None:
        out.append(
            Advice(
                AlertRule(
                    "rec_memory", f"memory_usage_mb > {health.memory_limit_mb}", scope="system"
                ),
                "capacity",
                "memory_usage_mb",
                "Consider increasing memory allocation ({value:.0f} MB in use)",
            )
        )
    return out
