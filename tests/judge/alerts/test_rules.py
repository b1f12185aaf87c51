"""Alert rules as a blueprint writes them (and those it refuses, also through
``streammetrics validate``), every built-in rule against the situation it names, and the
recommendations."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.errors import BlueprintError
from streammetrics.judge.alerts.rules import AlertRule, builtin_rules
from streammetrics.judge.health import HealthConfig
from streammetrics.model.events import Event
from streammetrics.snapshot import Alert, ProcessStats, Snapshot
from tests.support.alerts import System
from tests.support.process import cli


def named(alerts: list[Alert], name: str) -> list[Alert]:
    return [a for a in alerts if a.name == name]


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
    return cli("validate", str(path))


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
        "EventSourceDown",
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
