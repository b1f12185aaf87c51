"""Alert rules and recommendations: the lifecycle on a hand-driven clock, every built-in
rule, rules refused by ``streammetrics validate``, ``/alerts`` over HTTP, and a real
flapping breaker that earns its recommendation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import parse_blueprint
from streammetrics.errors import BlueprintError
from streammetrics.harness import Harness
from streammetrics.http.app import create_app
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.alerts.figures import (
    COMPONENT_FIGURES,
    FIGURE_HELP,
    STREAM_FIGURES,
    SYSTEM_FIGURES,
    FigureReader,
)
from streammetrics.judge.alerts.rules import AlertRule, builtin_rules
from streammetrics.judge.health import HealthConfig, HealthJudge
from streammetrics.model.events import Event
from streammetrics.snapshot import Alert, ProcessStats, Snapshot
from streammetrics.views.tick_cache import TickCache
from tests.support.http_app import FakeClock, FixedSampler, running


class System:
    """An aggregator, an alert engine and the health judgement that consults it, on one
    hand-driven clock."""

    def __init__(
        self,
        rules: Sequence[AlertRule] = (),
        *,
        builtin: bool = False,
        health: HealthConfig | None = None,
        retention: float = 300.0,
    ) -> None:
        self.clock = FakeClock()
        self.agg = Aggregator(clock=self.clock.monotonic, wall=self.clock.wall)
        self.engine = AlertEngine(
            rules, builtin=builtin, health=health, resolved_retention_s=retention
        )
        self.judge = HealthJudge(health, alerts=self.engine)
        self.process: ProcessStats | None = None

    def fold(self, *events: Event) -> None:
        assert self.agg.fold_events(list(events)) == []

    def at(self, seconds: float) -> Snapshot:
        """Advance the clock by ``seconds``, then build and evaluate one snapshot."""
        self.clock.advance(seconds)
        return self.judge.judge(self.agg.figures(process=self.process))

    @property
    def wall(self) -> float:
        return self.clock.wall()


def named(alerts: list[Alert], name: str) -> list[Alert]:
    return [a for a in alerts if a.name == name]


HIGH = AlertRule(
    "HighErr",
    "error_rate > 0.1",
    for_="2m",
    level="critical",
    message="{component} fails {value:.0%}",
)


def half_failing(s: System, component: str = "db") -> None:
    s.fold(Event(component, "processed"), Event(component, "error"))


# -- lifecycle -------------------------------------------------------------------------------


def test_pending_then_firing_then_resolved_then_gone() -> None:
    s = System([HIGH], retention=60.0)
    half_failing(s)
    t0 = s.wall
    snap = s.at(0)
    (p,) = snap.pending_alerts
    assert (p.name, p.state, p.component, p.level) == ("HighErr", "pending", "db", "critical")
    assert (p.since, p.timestamp, p.value, p.resolved_at) == (t0, t0, 0.5, None)
    assert p.message == "db fails 50%"
    assert snap.alerts == [] and snap.resolved_alerts == []
    for _ in range(3):  # keep errors in the 60 s window while the clock runs to 119 s
        snap = s.at(30)
        half_failing(s)
    snap = s.at(29)
    assert [a.state for a in snap.pending_alerts] == ["pending"]
    assert snap.pending_alerts[0].since == t0
    assert snap.alerts == []
    snap = s.at(1)  # `for` elapsed exactly
    (f,) = snap.alerts
    assert (f.state, f.since, f.timestamp, f.value) == ("firing", t0, t0 + 120, 0.5)
    assert snap.pending_alerts == []
    # the errors are diluted below the threshold: it resolves, with resolved_at
    s.fold(Event("db", "processed", count=1000))
    snap = s.at(5)
    assert snap.alerts == []
    (r,) = snap.resolved_alerts
    assert (r.state, r.since, r.timestamp, r.resolved_at) == ("resolved", t0, t0 + 120, t0 + 125)
    # kept for the retention, then gone
    assert len(s.at(60).resolved_alerts) == 1
    assert s.at(0.5).resolved_alerts == []


def test_a_pending_alert_that_turns_false_is_forgotten() -> None:
    s = System([HIGH])
    half_failing(s)
    assert len(s.at(0).pending_alerts) == 1
    s.fold(Event("db", "processed", count=1000))
    snap = s.at(10)
    assert (snap.alerts, snap.pending_alerts, snap.resolved_alerts) == ([], [], [])
    # true again later: pending from the new moment, not the old one
    s.fold(Event("db", "error", count=1000))
    snap = s.at(10)
    assert snap.pending_alerts[0].since == s.wall


def test_a_resolved_alert_that_comes_back_starts_pending_again() -> None:
    s = System([AlertRule("Down", "up == 0", for_="10s")])
    s.fold(Event("w", "stopped"))
    s.at(0)
    assert [a.state for a in s.at(10).alerts] == ["firing"]
    s.fold(Event("w", "started"))
    assert [a.state for a in s.at(1).resolved_alerts] == ["resolved"]
    s.fold(Event("w", "stopped"))
    snap = s.at(1)
    assert [a.state for a in snap.pending_alerts] == ["pending"]
    assert snap.resolved_alerts == []  # replaced by the new episode


def test_for_zero_fires_on_the_first_evaluation() -> None:
    s = System([AlertRule("Down", "up == 0", level="critical")])
    s.fold(Event("w", "stopped"))
    snap = s.at(0)
    assert [(a.name, a.state, a.component) for a in snap.alerts] == [("Down", "firing", "w")]


def test_for_counts_monotonic_time_not_the_wall_clock() -> None:
    s = System([HIGH])
    half_failing(s)
    s.at(0)
    s.clock.wall_at_mono0 += 3600.0  # the wall clock steps an hour ahead (NTP, a VM resume)
    snap = s.at(1)
    assert [a.state for a in snap.pending_alerts] == ["pending"]  # not fired by the jump
    assert snap.alerts == []


def test_rules_run_per_instance_of_their_scope() -> None:
    rules = [
        AlertRule("CompErr", "error_rate > 0.1"),
        AlertRule("OnlyDb", "error_rate > 0.1", component="db"),
        AlertRule("SysErr", "error_rate > 0.01", scope="system"),  # 2 of 104
        AlertRule("Backlog", "buffer_used > 5"),
    ]
    s = System(rules)
    s.agg.register_stream(
        "a->b:input", from_component="a", to_component="b", buffer=lambda: (9, 10)
    )
    s.agg.register_stream(
        "a->c:input", from_component="a", to_component="c", buffer=lambda: (1, 10)
    )
    half_failing(s, "db")
    half_failing(s, "cache")
    s.fold(Event("ok", "processed", count=100))
    snap = s.at(0)
    got = sorted((a.name, a.component) for a in snap.alerts)
    assert got == [
        ("Backlog", "a->b:input"),
        ("CompErr", "cache"),
        ("CompErr", "db"),
        ("OnlyDb", "db"),
        ("SysErr", None),
    ]
    assert [r.resolved_scope() for r in rules] == ["component", "component", "system", "stream"]


def test_an_instance_that_goes_away_resolves() -> None:
    s = System([AlertRule("Down", "up == 0")])
    s.fold(Event("w", "stopped"), Event("x", "processed"))
    snap = HealthJudge().judge(s.agg.figures())  # scored, not yet evaluated
    s.engine.evaluate(snap)
    gone = msgspec.structs.replace(
        snap,
        detailed_components={"x": snap.detailed_components["x"]},
        uptime_seconds=snap.uptime_seconds + 1,
        timestamp=snap.timestamp + 1,
    )
    out = s.engine.evaluate(gone)
    assert [(a.component, a.state, a.resolved_at) for a in out.resolved_alerts] == [
        ("w", "resolved", snap.timestamp + 1)
    ]


def test_a_firing_critical_alert_degrades_a_healthy_system_and_says_why() -> None:
    s = System([AlertRule("Slow", "p99 > 1", level="critical", message="{component} is slow")])
    s.fold(Event("api", "processed", latency=2.0), *[Event(f"c{i}", "processed") for i in range(4)])
    snap = s.at(0)
    assert snap.health_score == 1.0
    assert snap.system_status == "degraded"
    assert snap.reasons[-1].component == "api"
    assert snap.reasons[-1].reason == "critical alert Slow firing: api is slow"
    assert snap.reasons[-1].penalty == 0.0
    # a warning does not
    w = System([AlertRule("Slow", "p99 > 1", level="warning")])
    w.fold(Event("api", "processed", latency=2.0))
    snap = w.at(0)
    assert (snap.system_status, snap.reasons) == ("healthy", [])
    # another view shows the last evaluation without stepping it
    other = s.judge.judge(s.agg.figures(view=10), step_alerts=False)
    assert other.system_status == "degraded"
    assert [a.name for a in other.alerts] == ["Slow"]


# -- rules as configuration --------------------------------------------------------------------


def test_rule_struct_from_yaml_shape() -> None:
    rule = msgspec.convert(
        {"name": "HighErrorRate", "expr": "error_rate > 0.05", "for": "2m", "level": "critical"},
        AlertRule,
    )
    assert (rule.for_seconds, rule.level, rule.component, rule.resolved_scope()) == (
        120.0,
        "critical",
        None,
        "component",
    )
    with pytest.raises(msgspec.ValidationError, match="unknown field `severity`"):
        msgspec.convert({"name": "x", "expr": "up == 0", "severity": "high"}, AlertRule)
    with pytest.raises(msgspec.ValidationError, match="level"):
        msgspec.convert({"name": "x", "expr": "up == 0", "level": "page"}, AlertRule)


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"expr": "error_rate >> 2"}, "expr: operator '>>' is not allowed"),
        ({"expr": "erorr_rate > 0.05"}, "expr: unknown figure 'erorr_rate'"),
        ({"expr": "error_rate > 0.05", "for": "2 minutes"}, "for: not a duration"),
        ({"expr": "health_score < 0.5 and buffer_used > 1"}, "do not share one scope"),
        ({"expr": "health_score < 0.5", "component": "db"}, "not all component figures"),
        ({"expr": "health_score < 0.5", "scope": "system", "component": "db"}, "system rule"),
        ({"expr": "buffer_used > 1", "scope": "component"}, "unknown figure 'buffer_used'"),
    ],
)
def test_bad_rules_are_refused_when_built(rule: dict[str, Any], says: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"name": "Bad", **rule}, AlertRule)
    assert "alert rule 'Bad'" in str(info.value)
    assert says in str(info.value)


BAD_RULE = """
system:
  name: rules
  components:
    - {name: api, type: APIEndpoint, config: {port: 0}}
    - name: metrics
      type: MetricsEndpoint
      config:
        port: 0
        alerts:
          - {name: Fine, expr: "error_rate > 0.05", for: 1m}
          - {name: Sneaky, expr: "__import__('os').system('echo pwned')", for: 2m}
"""


def _validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bp.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "streammetrics.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_validate_rejects_a_bad_rule_with_its_path(tmp_path: Path) -> None:
    r = _validate(tmp_path, BAD_RULE)
    assert r.returncode == 2, r
    assert "system.components[1].config.alerts[1]" in r.stderr
    assert "alert rule 'Sneaky'" in r.stderr
    assert "Call is not allowed" in r.stderr
    assert "pwned" not in r.stdout
    r = _validate(tmp_path, BAD_RULE.replace("for: 2m", "for: soon"))
    assert r.returncode == 2
    assert "system.components[1].config.alerts[1]" in r.stderr
    fine = BAD_RULE.replace("__import__('os').system('echo pwned')", "breaker_flaps > 3")
    r = _validate(tmp_path, fine)
    assert r.returncode == 0, r.stderr


def test_blueprint_error_keeps_path_for_callers() -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(BAD_RULE)
    assert info.value.path == "system.components[1].config.alerts[1]"


def test_figure_tables_agree() -> None:
    assert set(FIGURE_HELP["system"]) == SYSTEM_FIGURES
    assert set(FIGURE_HELP["component"]) == COMPONENT_FIGURES
    assert set(FIGURE_HELP["stream"]) == STREAM_FIGURES
    s = System()
    s.agg.register_stream("a->b:input", from_component="a", to_component="b", buffer=lambda: (1, 2))
    s.fold(Event("a", "processed"))
    figs = FigureReader().read(s.judge.judge(s.agg.figures()))
    assert set(figs["system"]["system"]) == SYSTEM_FIGURES
    assert set(figs["component"]["a"]) == COMPONENT_FIGURES
    assert set(figs["stream"]["a->b:input"]) == STREAM_FIGURES


# -- the built-in rules -----------------------------------------------------------------------


def builtin(**health: Any) -> System:
    return System(builtin=True, health=HealthConfig(**health))


def firing(snap: Snapshot) -> set[tuple[str, str | None, str]]:
    return {(a.name, a.component, a.level) for a in snap.alerts}


def test_builtin_set() -> None:
    assert [r.name for r in builtin_rules(HealthConfig())] == [
        "ComponentDown",
        "HighErrorRate",
        "VeryHighErrorRate",
        "CircuitBreakerOpen",
        "ThroughputStopped",
        "ConsumerLag",
        "SystemUnhealthy",
    ]
    names = [r.name for r in builtin_rules(HealthConfig(memory_limit_mb=1, cpu_limit_percent=1))]
    assert names[-2:] == ["MemoryHigh", "CpuHigh"]


def test_component_down_stopped_failed_or_silent() -> None:
    s = builtin()
    s.fold(Event("a", "stopped"), Event("b", "stopped", detail="failed"), Event("h", "heartbeat"))
    snap = s.at(0)
    assert firing(snap) == {
        ("ComponentDown", "a", "critical"),
        ("ComponentDown", "b", "critical"),
    }
    assert snap.system_status == "unhealthy"
    snap = s.at(30.5)  # h's heartbeat is older than heartbeat_timeout_s (30 s)
    assert ("ComponentDown", "h", "critical") in firing(snap)
    s.fold(Event("h", "heartbeat"))
    assert ("ComponentDown", "h", "critical") not in firing(s.at(0))


def test_high_and_very_high_error_rate_after_a_minute() -> None:
    s = builtin()
    s.fold(Event("mild", "processed", count=9), Event("mild", "error"))  # 0.1
    s.fold(Event("bad", "processed"), Event("bad", "error"))  # 0.5
    assert firing(s.at(0)) == set()
    snap = s.at(59)
    assert {a.name for a in snap.pending_alerts} >= {"HighErrorRate", "VeryHighErrorRate"}
    s.fold(Event("mild", "processed", count=9), Event("mild", "error"))
    s.fold(Event("bad", "processed"), Event("bad", "error"))
    snap = s.at(1)
    assert firing(snap) == {
        ("HighErrorRate", "mild", "warning"),
        ("HighErrorRate", "bad", "warning"),
        ("VeryHighErrorRate", "bad", "critical"),
    }
    assert named(snap.pending_alerts, "SystemUnhealthy")  # score 0.6, for 2m
    (a,) = [a for a in snap.alerts if a.component == "bad" and a.name == "HighErrorRate"]
    assert a.value == 0.5
    assert a.message == "error rate 0.5 of bad over budget 0.05"


def test_breaker_open_fires_at_once_and_resolves_when_half_open() -> None:
    s = builtin()
    s.fold(Event("db", "breaker", detail="open"))
    assert ("CircuitBreakerOpen", "db", "warning") in firing(s.at(0))
    s.fold(Event("db", "breaker", detail="half_open"))
    snap = s.at(1)
    assert named(snap.alerts, "CircuitBreakerOpen") == []
    assert [a.state for a in named(snap.resolved_alerts, "CircuitBreakerOpen")] == ["resolved"]


def test_throughput_stopped_on_a_stream_that_had_traffic_while_its_producer_runs() -> None:
    s = builtin()
    s.agg.register_stream("p->c:input", from_component="p", to_component="c")
    s.agg.register_stream("q->c:input", from_component="q", to_component="c")
    s.agg.register_stream("never->c:input", from_component="never", to_component="c")
    s.fold(
        Event("p", "processed", stream="p->c:input"),
        Event("q", "processed", stream="q->c:input"),
        Event("never", "processed"),
        Event("q", "stopped"),  # q finished: its quiet stream is no fault
    )
    snap = s.at(30)
    assert named(snap.pending_alerts, "ThroughputStopped") == []  # the message is in the window
    snap = s.at(30)  # the 60 s window is empty now
    (p,) = named(snap.pending_alerts, "ThroughputStopped")
    assert (p.component, p.since) == ("p->c:input", s.wall)
    snap = s.at(59)
    assert named(snap.alerts, "ThroughputStopped") == []
    snap = s.at(1)
    (a,) = named(snap.alerts, "ThroughputStopped")
    assert (a.component, a.level, a.value) == ("p->c:input", "warning", 0.0)
    assert "while its producer runs" in a.message


def test_consumer_lag_and_the_capacity_recommendation_after_a_minute() -> None:
    s = builtin()
    level = [85]
    s.agg.register_stream(
        "p->c:input", from_component="p", to_component="c", buffer=lambda: (level[0], 100)
    )
    s.agg.register_stream("redis:orders", from_component="p", to_component="c", lag=lambda: 25_000)
    s.fold(Event("c", "processed"))
    snap = s.at(0)
    assert {a.component for a in named(snap.pending_alerts, "ConsumerLag")} == {
        "p->c:input",
        "redis:orders",
    }
    assert snap.recommendations == []
    snap = s.at(59.9)
    assert snap.recommendations == []  # not yet a minute
    level[0] = 90
    snap = s.at(0.1)
    lag = {a.component: a.value for a in named(snap.alerts, "ConsumerLag")}
    assert lag == {"p->c:input": 0.9, "redis:orders": 25_000.0}
    (rec,) = snap.recommendations
    assert (rec.type, rec.component, rec.figure, rec.value) == (
        "capacity",
        "p->c:input",
        "buffer_ratio",
        0.9,
    )
    assert "add consumers or raise its buffer" in rec.message
    assert "90%" in rec.message
    level[0] = 10  # drained: the advice goes at once, the alert resolves
    snap = s.at(1)
    assert snap.recommendations == []
    assert {a.component for a in named(snap.resolved_alerts, "ConsumerLag")} == {"p->c:input"}


def test_system_unhealthy_after_two_minutes() -> None:
    s = builtin()
    s.fold(Event("a", "breaker", detail="open"), Event("b", "processed"))  # 0.75
    snap = s.at(0)
    assert snap.health_score == 0.75
    assert named(snap.pending_alerts, "SystemUnhealthy")[0].value == 0.75
    snap = s.at(120)
    (a,) = named(snap.alerts, "SystemUnhealthy")
    assert (a.level, a.component) == ("critical", None)


def test_memory_and_cpu_over_their_limits() -> None:
    s = builtin(memory_limit_mb=500, cpu_limit_percent=80)
    s.process = ProcessStats(memory_usage_mb=650.0, cpu_usage_percent=95.0)
    snap = s.at(0)
    assert {a.name for a in snap.pending_alerts} == {"MemoryHigh", "CpuHigh"}
    (rec,) = snap.recommendations
    assert (rec.type, rec.component, rec.figure, rec.value) == (
        "capacity",
        None,
        "memory_usage_mb",
        650.0,
    )
    snap = s.at(60)
    alerts = {a.name: a for a in snap.alerts}
    assert alerts["MemoryHigh"].message == "High memory usage detected: 650 MB"
    assert alerts["CpuHigh"].value == 95.0
    s.process = ProcessStats(memory_usage_mb=100.0, cpu_usage_percent=None)  # CPU unknown
    snap = s.at(1)
    assert snap.alerts == [] or all(a.name not in ("MemoryHigh", "CpuHigh") for a in snap.alerts)
    assert {a.name for a in snap.resolved_alerts} == {"MemoryHigh", "CpuHigh"}


def test_builtin_rules_can_be_switched_off() -> None:
    s = System(builtin=False)
    s.fold(Event("a", "stopped"))
    assert s.at(0).alerts == []


# -- recommendations ---------------------------------------------------------------------------


def test_a_flapping_breaker_recommends_a_longer_reset_timeout() -> None:
    s = builtin()
    s.fold(Event("db", "processed"))
    s.at(0)
    for state in ("open", "half_open", "open", "half_open", "closed"):
        s.fold(Event("db", "breaker", detail=state))
        snap = s.at(10)
    (rec,) = [r for r in snap.recommendations if r.figure == "breaker_flaps"]
    assert (rec.type, rec.component, rec.value) == ("reliability", "db", 4.0)
    assert "reset_timeout_s" in rec.message
    assert "changed state 4 times in 5 minutes" in rec.message
    snap = s.at(301)  # five quiet minutes: no longer flapping
    assert [r for r in snap.recommendations if r.figure == "breaker_flaps"] == []


def test_error_and_latency_recommendations_name_their_figure() -> None:
    s = builtin()
    s.fold(Event("slow", "processed", latency=3.0))
    s.fold(Event("bad", "processed"), Event("bad", "error"))
    snap = s.at(0)
    assert [(r.type, r.component, r.figure) for r in snap.recommendations] == [
        ("performance", "slow", "p99")
    ]
    s.clock.advance(60)
    s.fold(Event("bad", "processed"), Event("bad", "error"))  # still failing a minute on
    snap = s.at(0)
    assert {(r.type, r.component, r.figure, r.value) for r in snap.recommendations} == {
        ("reliability", "bad", "error_rate", 0.5)  # the slow item left the window
    }


# -- over HTTP -----------------------------------------------------------------------------------


@asynccontextmanager
async def served(s: System) -> AsyncIterator[httpx.AsyncClient]:
    service = TickCache(
        s.agg,
        tick_s=1.0,
        sampler=FixedSampler(ProcessStats(100.0, 5.0)),
        clock=s.clock.monotonic,
        wall=s.clock.wall,
        judge=s.judge,
    )
    async with running(create_app(service)) as client:
        yield client


@pytest.mark.anyio
async def test_alerts_route_shows_the_lifecycle_in_the_specification_shape() -> None:
    s = System([HIGH, AlertRule("Down", "up == 0", level="warning")], builtin=False)
    s.agg.register_stream(
        "a->b:input", from_component="a", to_component="b", buffer=lambda: (95, 100)
    )
    half_failing(s)
    s.fold(Event("w", "stopped"))
    t0 = s.wall
    async with served(s) as client:
        body = (await client.get("/alerts")).json()
        assert set(body) == {
            "alerts",
            "recommendations",
            "timestamp",
            "pending_alerts",
            "resolved_alerts",
        }
        assert body["timestamp"] == t0
        assert body["alerts"] == [
            {
                "level": "warning",
                "message": "Down: up == 0",
                "component": "w",
                "timestamp": t0,
                "name": "Down",
                "state": "firing",
                "since": t0,
                "value": 0.0,
                "resolved_at": None,
            }
        ]
        (p,) = body["pending_alerts"]
        assert (p["name"], p["state"], p["since"], p["value"]) == ("HighErr", "pending", t0, 0.5)
        for _ in range(4):  # two minutes, errors kept in the window
            s.clock.advance(30)
            half_failing(s)
            await client.get("/alerts")
        body = (await client.get("/alerts")).json()
        high = [a for a in body["alerts"] if a["name"] == "HighErr"]
        assert high == [
            {
                "level": "critical",
                "message": "db fails 50%",
                "component": "db",
                "timestamp": t0 + 120,
                "name": "HighErr",
                "state": "firing",
                "since": t0,
                "value": 0.5,
                "resolved_at": None,
            }
        ]
        rec = body["recommendations"][0]
        assert rec == {
            "type": "capacity",
            "message": rec["message"],
            "component": "a->b:input",
            "figure": "buffer_ratio",
            "value": 0.95,
        }
        # the critical alert shows on /health too: 503, and the reason
        health = await client.get("/health")
        assert health.status_code == 503
        reasons = health.json()["reasons"]
        assert {
            "component": "db",
            "reason": "critical alert HighErr firing: db fails 50%",
            "penalty": 0.0,
        } in reasons
        # /metrics/json carries the firing alerts as well
        js = (await client.get("/metrics/json")).json()
        assert {a["name"] for a in js["alerts"]} == {"HighErr", "Down"}
        s.fold(Event("db", "processed", count=1000), Event("w", "started"))
        s.clock.advance(1)
        body = (await client.get("/alerts")).json()
        assert body["alerts"] == []
        assert {(a["name"], a["resolved_at"]) for a in body["resolved_alerts"]} == {
            ("HighErr", t0 + 121),
            ("Down", t0 + 121),
        }


# -- a real flapping breaker ----------------------------------------------------------------------

FLAPPING = """
system:
  name: flapping
  components:
    - {name: src, type: Source, config: {rate: 1500, batch: 10, limit: 600, error_ratio: 0.5}}
    - name: proc
      type: StreamProcessor
      config:
        circuit_breaker:
          failure_threshold: 1000
          failure_rate: 0.5
          min_calls: 10
          window_s: 10
          reset_timeout_s: 0.05
          half_open_max_calls: 1
    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.05}}
  bindings:
    - {from_component: src, to_component: proc, buffer: 100}
"""


@pytest.mark.anyio
async def test_a_really_flapping_breaker_earns_the_recommendation() -> None:
    harness = Harness(parse_blueprint(FLAPPING), flush_interval=0.02)
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        port = next(w.port for w in harness.listening if w.component == "metrics")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                rec: dict[str, Any] | None = None
                with anyio.fail_after(10):
                    while rec is None:
                        body = (await client.get("/alerts")).json()
                        flaps = [
                            r for r in body["recommendations"] if r["figure"] == "breaker_flaps"
                        ]
                        rec = flaps[0] if flaps else None
                        await anyio.sleep(0.02)
                assert (rec["type"], rec["component"]) == ("reliability", "proc")
                assert rec["value"] >= 4
                assert "raise its circuit_breaker.reset_timeout_s" in rec["message"]
                # every item was processed or failed once: the breaker lost none
                with anyio.fail_after(10):
                    while True:
                        harness.bus.flush()
                        comps = (await client.get("/components")).json()
                        proc = comps["components"]["proc"]
                        if proc["items_processed"] + proc["errors_encountered"] == 600:
                            break
                        await anyio.sleep(0.02)
                assert (proc["items_processed"], proc["errors_encountered"]) == (300, 300)
                assert comps["circuit_breakers"]["proc"]["failure_count"] >= 2
        finally:
            harness.stop()
