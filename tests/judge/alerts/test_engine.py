"""The alert lifecycle on a hand-driven clock: pending, firing, resolved and gone, per instance
of a rule's scope, on monotonic time; a firing critical alert degrades the system and says
why."""

from __future__ import annotations

import msgspec

from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Event
from tests.support.alerts import HIGH, System, half_failing


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
