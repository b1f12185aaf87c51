"""Alert rules with a lifecycle, and recommendations, derived from snapshots.

A rule is a condition over named figures (see ``rules.py``) that must hold for ``for``
before it fires, like a Prometheus alerting rule: pending (condition true, ``for`` not
yet elapsed) → firing → resolved, and a resolved alert is kept for
``resolved_retention_s`` with its ``resolved_at`` so a person who looks late still sees
what happened. A condition that turns false while pending is forgotten, as Prometheus
forgets it. A rule is evaluated once per instance of its scope: the system, each
component, or each stream (binding), as a PromQL rule is per series; an instance that
disappears resolves.

Durations (``for``, retention, breaker flaps) are measured on the snapshot's monotonic
clock (``uptime_seconds``), so a wall-clock step cannot fire or hold an alert; the
times an alert shows (``since``, ``timestamp``, ``resolved_at``) are unix seconds.

Recommendations are rules too (with their own ``for``), whose firing instances become
advice that names the figure that triggered it and its value.

Evaluation is built for thousands of instances per tick: each rule is compiled once,
each instance's figures are one dict literal per tick, a ``figure > number`` rule is
tested inline in a comprehension, and an instance whose condition is false and that
has no alert state costs nothing more (1,000 components: about 2 ms a tick).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Annotated, Final, Literal

import msgspec

from .health import HealthConfig
from .model.types import DurationError, parse_duration
from .rules import (
    Compiled,
    Figures,
    RuleSyntaxError,
    compile_expr,
    simple_comparison,
)
from .snapshot import (
    Alert,
    BreakerStatus,
    Deduction,
    Recommendation,
    Snapshot,
)

__all__ = (
    "COMPONENT_FIGURES",
    "FIGURE_HELP",
    "STREAM_FIGURES",
    "SYSTEM_FIGURES",
    "AlertEngine",
    "AlertRule",
    "builtin_rules",
)

Scope = Literal["system", "component", "stream"]
AlertState = Literal["pending", "firing", "resolved"]

#: Every figure a rule may name, by scope, with what it is (README lists these).
FIGURE_HELP: Final[dict[Scope, dict[str, str]]] = {
    "system": {
        "health_score": "system health score, 0.0 to 1.0",
        "error_rate": "system-wide errors / (processed + errors) over the default window",
        "items_per_second": "items processed per second, system-wide",
        "message_rate": "stream messages per second, system-wide",
        "memory_usage_mb": "resident memory of the endpoint process (null if unknown)",
        "cpu_usage_percent": "CPU of the endpoint process, 100 = one core (null if unknown)",
        "p50": "system-wide latency median in seconds (null when nothing was timed)",
        "p95": "system-wide latency p95 in seconds",
        "p99": "system-wide latency p99 in seconds",
        "components_total": "components known",
        "components_healthy": "components at or above the healthy threshold",
        "components_running": "components running",
        "uptime_seconds": "seconds since the endpoint started",
        "active_spans": "spans started and not ended",
        "expired_spans": "spans given up on after span_timeout_s",
        "rejected_events": "events that could not be folded, since start",
    },
    "component": {
        "error_rate": "errors / (processed + errors) over the default window",
        "items_per_second": "items processed per second over the default window",
        "p50": "latency median in seconds over the default window (null if none timed)",
        "p95": "latency p95 in seconds",
        "p99": "latency p99 in seconds",
        "span_p99": "p99 of its spans' durations in seconds (null if it ended none)",
        "health": "its health score, 0.0 to 1.0",
        "is_healthy": "1 when its score is at or above the healthy threshold, else 0",
        "up": "0 when stopped, failed or silent past heartbeat_timeout_s, else 1",
        "heartbeat_age_s": "seconds since its last heartbeat (null if it never sent one)",
        "processed": "items processed in the default window",
        "errors": "errors in the default window",
        "items_processed": "items processed since start",
        "errors_encountered": "errors since start",
        "breaker_state": "0 closed, 1 open, 2 half_open",
        "breaker_open": "1 while its circuit breaker is open, else 0",
        "breaker_flaps": "breaker state changes in the last 5 minutes",
        "breaker_failure_count": "times its breaker opened, since start",
        "memory_usage_mb": "resident memory of the endpoint process",
        "cpu_usage_percent": "CPU of the endpoint process",
    },
    "stream": {
        "message_rate": "messages per second over the default window",
        "total_messages": "messages since start",
        "buffer_used": "items waiting in the binding (null if unknown)",
        "buffer_size": "capacity of the binding",
        "buffer_ratio": "buffer_used / buffer_size",
        "stalled_seconds": "seconds items have waited with the consumer taking none",
        "consumer_lag": "entries a consumer group has not read yet (transports that know it)",
        "producer_up": "1 while the producing component runs, else 0",
        "consumer_up": "1 while the consuming component runs, else 0",
    },
}
SYSTEM_FIGURES: Final = frozenset(FIGURE_HELP["system"])
COMPONENT_FIGURES: Final = frozenset(FIGURE_HELP["component"])
STREAM_FIGURES: Final = frozenset(FIGURE_HELP["stream"])
_SCOPE_FIGURES: Final[dict[Scope, frozenset[str]]] = {
    "system": SYSTEM_FIGURES,
    "component": COMPONENT_FIGURES,
    "stream": STREAM_FIGURES,
}
_ALL_FIGURES: Final = SYSTEM_FIGURES | COMPONENT_FIGURES | STREAM_FIGURES
_BREAKER_CODE: Final = {"closed": 0.0, "open": 1.0, "half_open": 2.0}
_CLOSED: Final = BreakerStatus("closed", 0, None, 0.0, 0)
_DOWN: Final = frozenset(("stopped", "failed"))
#: Breaker state changes are counted over this many seconds for ``breaker_flaps``.
FLAP_WINDOW_S: Final = 300.0


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
        _fn, used = compile_expr(self.expr, _ALL_FIGURES)
        scopes: tuple[Scope, ...] = ("component", "system", "stream")
        if self.component is not None:
            scopes = ("component", "stream")
        for scope in scopes:
            if all(u in _SCOPE_FIGURES[scope] for u in used):
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
            "binding {component} has been over 80% full for a minute ({value:.0%} now): "
            "add consumers or raise its buffer",
        ),
        _Advice(
            AlertRule("rec_flap", "breaker_flaps >= 4"),
            "reliability",
            "breaker_flaps",
            "breaker of {component} changed state {value:.0f} times in 5 minutes: "
            "raise its circuit_breaker.reset_timeout_s so the cause has time to clear",
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
    """One instance's place in the lifecycle: ``*_m`` monotonic, the rest unix seconds."""

    __slots__ = ("fired_at", "resolved_at", "resolved_m", "since", "since_m", "state", "value")

    def __init__(self, since: float, since_m: float, value: float | None) -> None:
        self.state: AlertState = "pending"
        self.since = since
        self.since_m = since_m
        self.fired_at: float | None = None
        self.resolved_at: float | None = None
        self.resolved_m = 0.0
        self.value = value


class _Rule:
    """A rule as the engine runs it: compiled once, with its instances' states."""

    __slots__ = ("fn", "hold", "rule", "scope", "simple", "states", "used")

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.scope = rule.resolved_scope()
        self.fn, self.used = rule.compile()
        self.simple = simple_comparison(rule.expr)
        self.hold = rule.for_seconds
        self.states: dict[str, _State] = {}


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


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
        self.health = h
        self.rules = [*(builtin_rules(h) if builtin else ()), *rules]
        self._rules = [_Rule(r) for r in self.rules]
        self._advice = [(a, _Rule(a.rule)) for a in _advice(h)]
        self.retention = resolved_retention_s
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
        """Every instance's named figures, by scope (``FIGURE_HELP`` says what each is).

        Steps the breaker-flap history, so call it once per evaluated snapshot. Built
        as dict literals: for a thousand components that is a fraction of a millisecond,
        less than picking out the figures the rules happen to read would cost."""
        now = snap.uptime_seconds
        perf = snap.performance
        mem, cpu = perf.memory_usage_mb, perf.cpu_usage_percent
        wkey = f"{perf.window_seconds}s"
        system: dict[str, float | None] = {
            "health_score": snap.health_score,
            "error_rate": perf.error_rate,
            "items_per_second": perf.items_per_second,
            "message_rate": perf.message_rate,
            "memory_usage_mb": mem,
            "cpu_usage_percent": cpu,
            "p50": perf.latency.p50,
            "p95": perf.latency.p95,
            "p99": perf.latency.p99,
            "components_total": float(snap.components.total),
            "components_healthy": float(snap.components.healthy),
            "components_running": float(snap.components.running),
            "uptime_seconds": snap.uptime_seconds,
            "active_spans": float(snap.traces.active_spans),
            "expired_spans": float(snap.traces.expired_spans),
            "rejected_events": float(sum(snap.rejected.values())),
        }
        timeout = self.health.heartbeat_timeout_s
        breakers = snap.circuit_breakers
        flaps = self._flaps
        comps: dict[str, Figures] = {}
        for name, c in snap.detailed_components.items():
            b = breakers.get(name, _CLOSED)
            bs = b.state
            hb = c.heartbeat_age_s
            lat = c.latency
            w = c.windows.get(wkey)
            comps[name] = {
                "error_rate": c.error_rate,
                "items_per_second": c.items_per_second,
                "p50": lat.p50,
                "p95": lat.p95,
                "p99": lat.p99,
                "span_p99": c.span_latency.p99 if c.span_latency is not None else None,
                "health": c.health,
                "is_healthy": 1.0 if c.is_healthy else 0.0,
                "up": 0.0 if c.status in _DOWN or (hb is not None and hb > timeout) else 1.0,
                "heartbeat_age_s": hb,
                "processed": w.processed if w is not None else None,
                "errors": w.errors if w is not None else None,
                "items_processed": c.items_processed,
                "errors_encountered": c.errors_encountered,
                "breaker_state": _BREAKER_CODE[bs],
                "breaker_open": 1.0 if bs == "open" else 0.0,
                "breaker_flaps": (
                    self._flap_count(name, b.transitions, now)
                    if b.transitions or name in flaps
                    else 0.0
                ),
                "breaker_failure_count": b.failure_count,
                "memory_usage_mb": mem,
                "cpu_usage_percent": cpu,
            }
        streams: dict[str, Figures] = {}
        details = snap.detailed_components
        for key, st in snap.streaming.streams.items():
            used, size = st.buffer_used, st.buffer_size
            prod = details.get(st.from_component) if st.from_component is not None else None
            cons = details.get(st.to_component) if st.to_component is not None else None
            streams[key] = {
                "message_rate": st.message_rate,
                "total_messages": st.total_messages,
                "buffer_used": used,
                "buffer_size": size,
                "buffer_ratio": used / size if used is not None and size else None,
                "stalled_seconds": st.stalled_seconds,
                "consumer_lag": st.consumer_lag,
                "producer_up": None if prod is None else float(prod.status == "running"),
                "consumer_up": None if cons is None else float(cons.status == "running"),
            }
        return {"system": {"system": system}, "component": comps, "stream": streams}

    def _flap_count(self, name: str, transitions: int, now: float) -> float:
        """State changes of ``name``'s breaker within the last FLAP_WINDOW_S, from the
        transition counts seen at each evaluation."""
        hist = self._flaps.get(name)
        if hist is None:
            if not transitions:
                return 0.0  # the common case: a breaker that never moved
            hist = self._flaps[name] = deque()
        if not hist or hist[-1][1] != transitions:
            hist.append((now, transitions))
        while len(hist) > 1 and hist[1][0] <= now - FLAP_WINDOW_S:
            hist.popleft()
        return float(transitions - hist[0][1]) if len(hist) > 1 else 0.0

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self, snap: Snapshot) -> Snapshot:
        """The snapshot with its alerts, recommendations and status filled in; steps
        every lifecycle. Call once per snapshot of the default view."""
        self.evaluations += 1
        now_m = snap.uptime_seconds
        wall = snap.timestamp
        figs = self.figures(snap)
        firing: list[Alert] = []
        pending: list[Alert] = []
        resolved: list[Alert] = []
        by_state = {"firing": firing, "pending": pending, "resolved": resolved}
        for r in self._rules:
            table = figs[r.scope]
            self._step(r, table, now_m, wall)
            rule = r.rule
            for inst, st in r.states.items():
                by_state[st.state].append(
                    Alert(
                        level=rule.level,
                        message=self._text(
                            rule.message or f"{rule.name}: {rule.expr}", rule, inst, st.value
                        ),
                        component=None if r.scope == "system" else inst,
                        timestamp=st.fired_at if st.fired_at is not None else st.since,
                        name=rule.name,
                        state=st.state,
                        since=st.since,
                        value=st.value,
                        resolved_at=st.resolved_at,
                    )
                )
        recs: list[Recommendation] = []
        for adv, r in self._advice:
            table = figs[r.scope]
            self._step(r, table, now_m, wall)
            for inst, st in list(r.states.items()):
                if st.state == "resolved":
                    del r.states[inst]  # advice is for now; it keeps no history
                elif st.state == "firing":
                    f = table.get(inst, {})
                    recs.append(
                        Recommendation(
                            type=adv.type,
                            message=self._text(adv.text, adv.rule, inst, st.value),
                            component=None if r.scope == "system" else inst,
                            figure=adv.figure,
                            value=_num(f.get(adv.figure)),
                        )
                    )
        self._last = (firing, pending, resolved, recs)
        return self.annotate(snap)

    def _step(self, r: _Rule, table: Mapping[str, Figures], now_m: float, wall: float) -> None:
        """Move every instance of ``r`` one evaluation on."""
        fn, used, hold, states = r.fn, r.used, r.hold, r.states
        only = r.rule.component
        if only is None and r.simple is not None:
            # ``figure > 0.05``, tested inline: no call per instance but the comparison.
            name, cmp, const = r.simple
            active = {
                inst: f
                for inst, f in table.items()
                if (v := f.get(name)) is not None and cmp(v, const)
            }
        elif only is None:
            # One closure call per instance; everything else is per active instance.
            active = {inst: f for inst, f in table.items() if fn(f)}
        else:
            f1 = table.get(only)
            active = {only: f1} if f1 is not None and fn(f1) else {}
        for inst, f in active.items():
            value = next((float(v) for u in used if (v := f.get(u)) is not None), None)
            st = states.get(inst)
            if st is None or st.state == "resolved":
                st = states[inst] = _State(wall, now_m, value)
            st.value = value
            if st.state == "pending" and now_m - st.since_m >= hold:
                st.state = "firing"
                st.fired_at = wall
        if len(states) == len(active):
            return  # every state is an active instance: nothing to resolve or expire
        for inst, st in list(states.items()):
            if inst in active:
                continue
            if st.state == "pending":  # false again (or gone) before it fired: forgotten
                del states[inst]
                continue
            if st.state == "firing":  # false again, or the instance went away
                st.state = "resolved"
                st.resolved_at, st.resolved_m = wall, now_m
            if now_m - st.resolved_m > self.retention:
                del states[inst]

    def annotate(self, snap: Snapshot) -> Snapshot:
        """The snapshot with the last evaluation's alerts, without stepping any lifecycle
        (for views other than the one that drives the rules). A firing critical alert
        caps the status at degraded, and says so in ``reasons`` (penalty 0: the score
        is the score; the alert is why it is not healthy)."""
        firing, pending, resolved, recs = self._last
        status = snap.system_status
        critical = [a for a in firing if a.level == "critical"]
        reasons = snap.reasons
        if critical:
            if status == "healthy":
                status = "degraded"
            reasons = [
                *reasons,
                *(
                    Deduction(a.component, f"critical alert {a.name} firing: {a.message}", 0.0)
                    for a in critical
                ),
            ]
        return msgspec.structs.replace(
            snap,
            alerts=firing,
            pending_alerts=pending,
            resolved_alerts=resolved,
            recommendations=recs,
            system_status=status,
            reasons=reasons,
        )

    @staticmethod
    def _text(template: str, rule: AlertRule, inst: str, value: float | None) -> str:
        v = value if value is not None else float("nan")
        try:
            return template.format(component=inst, name=rule.name, value=v)
        except (KeyError, ValueError, IndexError, AttributeError):
            return template
