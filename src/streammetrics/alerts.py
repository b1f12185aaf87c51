"""Alert rules with a lifecycle, and recommendations, derived from snapshots.

A rule is a condition over named figures (see ``rules.py``) that must hold for ``for``
before it fires, like a Prometheus alerting rule: pending → firing → resolved, and a
resolved alert is kept for ``resolved_retention_s`` so a person who looks late still
sees what happened. A rule is evaluated once per instance of its scope: the system,
each component, or each stream (binding), as a PromQL rule is per series.

Recommendations are rules too (with their own ``for``), whose firing instances become
advice with the figure that triggered it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Final, Literal

import msgspec

from .health import HealthConfig
from .rules import Compiled, Figures, RuleSyntaxError, compile_expr, parse_duration
from .snapshot import Alert, Recommendation, Snapshot

__all__ = (
    "COMPONENT_FIGURES",
    "STREAM_FIGURES",
    "SYSTEM_FIGURES",
    "AlertEngine",
    "AlertRule",
    "builtin_rules",
)

Scope = Literal["system", "component", "stream"]

SYSTEM_FIGURES: Final = frozenset(
    {
        "health_score",
        "error_rate",
        "items_per_second",
        "message_rate",
        "memory_usage_mb",
        "cpu_usage_percent",
        "p50",
        "p95",
        "p99",
        "components_total",
        "components_healthy",
        "components_running",
        "uptime_seconds",
        "active_spans",
        "rejected_events",
    }
)
COMPONENT_FIGURES: Final = frozenset(
    {
        "error_rate",
        "items_per_second",
        "p50",
        "p95",
        "p99",
        "health",
        "is_healthy",
        "up",
        "processed",
        "errors",
        "items_processed",
        "errors_encountered",
        "breaker_state",
        "breaker_open",
        "breaker_flaps",
        "memory_usage_mb",
        "cpu_usage_percent",
    }
)
STREAM_FIGURES: Final = frozenset(
    {"message_rate", "total_messages", "buffer_used", "buffer_size", "buffer_ratio", "consumer_lag"}
)
_SCOPE_FIGURES: Final[dict[Scope, frozenset[str]]] = {
    "system": SYSTEM_FIGURES,
    "component": COMPONENT_FIGURES,
    "stream": STREAM_FIGURES,
}
_BREAKER_CODE: Final = {"closed": 0.0, "open": 1.0, "half_open": 2.0}


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
    """Evaluate for this component only."""
    scope: Scope | None = None
    """system, component or stream; inferred from the figures used when omitted."""
    message: str | None = None
    """Text of the alert; ``{component}``, ``{value}`` and ``{name}`` are filled in."""

    def __post_init__(self) -> None:
        # Compiled here so that `streammetrics validate` rejects a bad rule with its path.
        try:
            self.compiled()
            parse_duration(self.for_)
        except RuleSyntaxError as exc:
            raise ValueError(f"alert rule {self.name!r}: {exc}") from None

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_)

    def resolved_scope(self) -> Scope:
        if self.scope is not None:
            return self.scope
        if self.component is not None:
            return "component"
        _fn, used = compile_expr(self.expr, SYSTEM_FIGURES | COMPONENT_FIGURES | STREAM_FIGURES)
        for scope in ("component", "system", "stream"):
            if all(u in _SCOPE_FIGURES[scope] for u in used):
                return scope
        raise RuleSyntaxError(
            f"figures {sorted(set(used))} of {self.expr!r} do not share one scope"
        )

    def compiled(self) -> Compiled:
        return self.compile()[0]

    def compile(self) -> tuple[Compiled, list[str]]:
        """The evaluator, and the figure names it reads (the first is the alert's value)."""
        return compile_expr(self.expr, _SCOPE_FIGURES[self.resolved_scope()])


def builtin_rules(health: HealthConfig) -> list[AlertRule]:
    """The rule set every endpoint has (thresholds from its health config)."""
    b = health.error_budget
    rules = [
        AlertRule(
            "ComponentDown", "up == 0", level="critical", message="component {component} is down"
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
            "message_rate == 0 and total_messages > 0",
            for_="1m",
            scope="stream",
            message="stream {component} had traffic and has carried nothing for a minute",
        ),
        AlertRule(
            "ConsumerLag",
            "buffer_ratio > 0.8 or consumer_lag > 10000",
            for_="1m",
            scope="stream",
            message="consumer of {component} is behind: backlog ratio {value:.2f}",
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


class _Advice(msgspec.Struct, frozen=True):
    rule: AlertRule
    type: Literal["performance", "reliability", "capacity"]
    figure: str
    text: str


def _advice(health: HealthConfig) -> list[_Advice]:
    out = [
        _Advice(
            AlertRule("rec_buffer", "buffer_ratio > 0.8", for_="1m", scope="stream"),
            "capacity",
            "buffer_ratio",
            "binding {component} is {value:.0%} full: add consumers or raise its buffer",
        ),
        _Advice(
            AlertRule("rec_flap", "breaker_flaps >= 4"),
            "reliability",
            "breaker_flaps",
            "breaker of {component} changed state {value:.0f} times in 5 minutes: "
            "raise reset_timeout_s",
        ),
        _Advice(
            AlertRule("rec_errors", f"error_rate > {health.error_budget}", for_="1m"),
            "reliability",
            "error_rate",
            "{component} fails {value:.1%} of its items: look at its last_error",
        ),
        _Advice(
            AlertRule("rec_latency", "p99 > 1"),
            "performance",
            "p99",
            "p99 latency of {component} is {value:.2f}s: profile it or add workers",
        ),
    ]
    if health.memory_limit_mb is not None:
        out.append(
            _Advice(
                AlertRule(
                    "rec_memory", f"memory_usage_mb > {health.memory_limit_mb}", scope="system"
                ),
                "capacity",
                "memory_usage_mb",
                "Consider increasing memory allocation ({value:.0f} MB in use)",
            )
        )
    return out


class _State:
    __slots__ = ("fired_at", "resolved_at", "since", "state", "value")

    def __init__(self, since: float, value: float | None) -> None:
        self.state: Literal["pending", "firing", "resolved"] = "pending"
        self.since = since
        self.fired_at: float | None = None
        self.resolved_at: float | None = None
        self.value = value


def _num(v: object) -> float | None:
    if v is None or isinstance(v, str):
        return None
    return float(v)  # type: ignore[arg-type]


class AlertEngine:
    """Evaluates rules against successive snapshots; keeps each instance's lifecycle."""

    def __init__(
        self,
        rules: Sequence[AlertRule] = (),
        *,
        health: HealthConfig | None = None,
        builtin: bool = True,
        resolved_retention_s: float = 300.0,
    ) -> None:
        h = health or HealthConfig()
        self.rules = [*(builtin_rules(h) if builtin else ()), *rules]
        self._compiled = [(r, r.resolved_scope(), *r.compile()) for r in self.rules]
        self._advice = [(a, a.rule.resolved_scope(), *a.rule.compile()) for a in _advice(h)]
        self.retention = resolved_retention_s
        self._states: dict[tuple[str, str], _State] = {}
        self._advice_states: dict[tuple[str, str], _State] = {}
        self._flaps: dict[str, deque[tuple[float, int]]] = {}
        self.evaluations = 0
        self._last: tuple[list[Alert], list[Alert], list[Alert], list[Recommendation]] = (
            [],
            [],
            [],
            [],
        )

    # -- figures ---------------------------------------------------------------------------

    def figures(self, snap: Snapshot) -> dict[Scope, dict[str, Figures]]:
        """Every instance's named figures, by scope."""
        now = snap.timestamp
        perf = snap.performance
        system: dict[str, float | None] = {
            "health_score": snap.health_score,
            "error_rate": perf.error_rate,
            "items_per_second": perf.items_per_second,
            "message_rate": perf.message_rate,
            "memory_usage_mb": perf.memory_usage_mb,
            "cpu_usage_percent": perf.cpu_usage_percent,
            "p50": perf.latency.p50,
            "p95": perf.latency.p95,
            "p99": perf.latency.p99,
            "components_total": snap.components.total,
            "components_healthy": snap.components.healthy,
            "components_running": snap.components.running,
            "uptime_seconds": snap.uptime_seconds,
            "active_spans": snap.traces.active_spans,
            "rejected_events": float(sum(snap.rejected.values())),
        }
        comps: dict[str, Figures] = {}
        for name, c in snap.detailed_components.items():
            br = snap.circuit_breakers.get(name)
            bstate = br.state if br is not None else "closed"
            window = c.windows.get(f"{perf.window_seconds}s")
            comps[name] = {
                "error_rate": c.error_rate,
                "items_per_second": c.items_per_second,
                "p50": c.latency.p50,
                "p95": c.latency.p95,
                "p99": c.latency.p99,
                "health": c.health,
                "is_healthy": float(c.is_healthy),
                "up": 0.0 if c.status in ("stopped", "failed") else 1.0,
                "processed": float(window.processed) if window else None,
                "errors": float(window.errors) if window else None,
                "items_processed": float(c.items_processed),
                "errors_encountered": float(c.errors_encountered),
                "breaker_state": _BREAKER_CODE[bstate],
                "breaker_open": float(bstate == "open"),
                "breaker_flaps": self._flap_count(name, br.transitions if br else 0, now),
                "memory_usage_mb": perf.memory_usage_mb,
                "cpu_usage_percent": perf.cpu_usage_percent,
            }
        streams: dict[str, Figures] = {}
        for key, s in snap.streaming.streams.items():
            ratio = (
                s.buffer_used / s.buffer_size
                if s.buffer_used is not None and s.buffer_size
                else None
            )
            streams[key] = {
                "message_rate": s.message_rate,
                "total_messages": float(s.total_messages),
                "buffer_used": _num(s.buffer_used),
                "buffer_size": _num(s.buffer_size),
                "buffer_ratio": ratio,
                "consumer_lag": _num(getattr(s, "consumer_lag", None)),
            }
        return {"system": {"system": system}, "component": comps, "stream": streams}

    def _flap_count(self, name: str, transitions: int, now: float) -> float:
        hist = self._flaps.get(name)
        if hist is None:
            hist = self._flaps[name] = deque()
        if not hist or hist[-1][1] != transitions:
            hist.append((now, transitions))
        while len(hist) > 1 and hist[1][0] <= now - 300:
            hist.popleft()
        return float(transitions - hist[0][1]) if len(hist) > 1 else 0.0

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self, snap: Snapshot) -> Snapshot:
        """The snapshot with its alerts, recommendations and status filled in."""
        self.evaluations += 1
        now = snap.timestamp
        figs = self.figures(snap)
        firing: list[Alert] = []
        pending: list[Alert] = []
        resolved: list[Alert] = []
        live: set[tuple[str, str]] = set()
        for rule, scope, fn, used in self._compiled:
            for inst, f in self._instances(rule, scope, figs):
                live.add((rule.name, inst))
                key = (rule.name, inst)
                st = self._step(self._states, key, fn, used, f, rule.for_seconds, now)
                if st is None:
                    continue
                alert = Alert(
                    level=rule.level,
                    message=self._text(
                        rule.message or f"{rule.name}: {rule.expr}", rule, inst, st.value
                    ),
                    component=None if scope == "system" else inst,
                    timestamp=st.fired_at if st.fired_at is not None else st.since,
                    name=rule.name,
                    state=st.state,
                    since=st.since,
                    value=st.value,
                    resolved_at=st.resolved_at,
                )
                {"firing": firing, "pending": pending, "resolved": resolved}[st.state].append(alert)
        self._expire(self._states, now, live)
        recs: list[Recommendation] = []
        for adv, scope, fn, used in self._advice:
            for inst, f in self._instances(adv.rule, scope, figs):
                key = (adv.rule.name, inst)
                hold = adv.rule.for_seconds
                st = self._step(self._advice_states, key, fn, used, f, hold, now)
                if st is not None and st.state == "firing":
                    recs.append(
                        Recommendation(
                            type=adv.type,
                            message=self._text(adv.text, adv.rule, inst, st.value),
                            component=None if scope == "system" else inst,
                            figure=adv.figure,
                            value=_num(f.get(adv.figure)),
                        )
                    )
        self._advice_states = {
            k: v for k, v in self._advice_states.items() if v.state != "resolved"
        }
        self._last = (firing, pending, resolved, recs)
        return self.annotate(snap)

    def annotate(self, snap: Snapshot) -> Snapshot:
        """The snapshot with the last evaluation's alerts, without stepping any lifecycle
        (for views other than the one that drives the rules)."""
        firing, pending, resolved, recs = self._last
        status = snap.system_status
        if status == "healthy" and any(a.level == "critical" for a in firing):
            status = "degraded"
        return msgspec.structs.replace(
            snap,
            alerts=firing,
            pending_alerts=pending,
            resolved_alerts=resolved,
            recommendations=recs,
            system_status=status,
        )

    @staticmethod
    def _instances(
        rule: AlertRule, scope: Scope, figs: Mapping[Scope, Mapping[str, Figures]]
    ) -> Iterable[tuple[str, Figures]]:
        table = figs[scope]
        if rule.component is not None:
            f = table.get(rule.component)
            return [(rule.component, f)] if f is not None else []
        return table.items()

    def _step(
        self,
        states: dict[tuple[str, str], _State],
        key: tuple[str, str],
        fn: Compiled,
        used: list[str],
        f: Figures,
        hold: float,
        now: float,
    ) -> _State | None:
        active = bool(fn(f))
        value = next((float(v) for u in used if (v := f.get(u)) is not None), None)
        st = states.get(key)
        if active:
            if st is None or st.state == "resolved":
                st = states[key] = _State(now, value)
            st.value = value
            if st.state == "pending" and now - st.since >= hold:
                st.state = "firing"
                st.fired_at = now
            return st
        if st is None:
            return None
        if st.state == "pending":
            del states[key]
            return None
        if st.state == "firing":
            st.state = "resolved"
            st.resolved_at = now
        return st

    def _expire(
        self, states: dict[tuple[str, str], _State], now: float, live: set[tuple[str, str]]
    ) -> None:
        """Instances that vanished resolve; resolved ones leave after the retention."""
        for key, st in list(states.items()):
            if key not in live and st.state != "resolved":
                if st.state == "pending":
                    del states[key]
                    continue
                st.state = "resolved"
                st.resolved_at = now
            gone = st.resolved_at is not None and now - st.resolved_at > self.retention
            if st.state == "resolved" and gone:
                del states[key]

    @staticmethod
    def _text(template: str, rule: AlertRule, inst: str, value: float | None) -> str:
        v = value if value is not None else float("nan")
        try:
            return template.format(component=inst, name=rule.name, value=v)
        except (KeyError, ValueError, IndexError):
            return template
