"""Eviction of idle components and streams (``component_ttl_s``) on a hand-driven clock:
what only events made known goes after the TTL, with its alerts; what the blueprint or code
declared stays; the table stays bounded however many names come and go."""

from __future__ import annotations

import pytest

from streammetrics.aggregator import Aggregator
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.errors import ConfigError
from streammetrics.judge.alerts.figures import FigureReader
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Delta, Event
from tests.support.alerts import System, half_failing
from tests.support.http_app import FakeClock

TTL = 60.0


def make(clock: FakeClock, ttl: float = TTL, **kw: int) -> Aggregator:
    return Aggregator(clock=clock.monotonic, wall=clock.wall, component_ttl_s=ttl, **kw)


def names(agg: Aggregator) -> set[str]:
    return set(agg.figures().detailed_components)


def test_undeclared_components_go_after_the_ttl_and_declared_ones_never() -> None:
    clock = FakeClock()
    agg = make(clock)
    agg.register_component("blueprint_peer", "Store")
    agg.register_component("late_peer")
    assert agg.fold_events([Event("ghost", "processed"), Event("late_peer", "processed")]) == []
    agg.fold_deltas([Delta("probed", processed=1)])  # a probe is made by code: declared
    agg.register_component("adopted")  # registered after its first event: declared now
    assert agg.fold_events([Event("adopted", "heartbeat")]) == []
    everyone = {"blueprint_peer", "late_peer", "ghost", "probed", "adopted"}
    clock.advance(TTL)
    assert names(agg) == everyone  # silent exactly TTL: not past it yet
    clock.advance(0.001)
    figs = agg.figures()
    assert set(figs.detailed_components) == everyone - {"ghost"}
    assert figs.components_evicted == 1
    assert agg.statistics().components_evicted == 1
    assert agg.statistics().components == 4
    clock.advance(10 * TTL)
    assert names(agg) == everyone - {"ghost"}
    assert agg.statistics().components_evicted == 1
    # a name that comes back is a new component, counted from zero
    assert agg.fold_events([Event("ghost", "processed", count=3)]) == []
    assert agg.figures().detailed_components["ghost"].items_processed == 3


def test_a_ttl_of_zero_keeps_every_component_forever() -> None:
    clock = FakeClock()
    agg = make(clock, ttl=0)
    assert agg.fold_events([Event(f"c{i}", "processed") for i in range(100)]) == []
    clock.advance(1e9)
    assert len(names(agg)) == 100
    assert agg.statistics().components_evicted == 0


def test_any_report_resets_the_timer() -> None:
    clock = FakeClock()
    agg = make(clock)
    agg.fold_events([Event(n, "processed") for n in ("a", "b", "c", "d")])
    clock.advance(50)
    agg.fold_events(
        [
            Event("a", "processed"),
            Event("b", "heartbeat"),
            Event("c", "breaker", detail="open"),
        ]
    )
    clock.advance(11)  # 61 s after the first reports, 11 s after the second
    assert names(agg) == {"a", "b", "c"}
    clock.advance(TTL - 11)
    assert names(agg) == {"a", "b", "c"}  # exactly TTL since their last report
    clock.advance(0.001)
    assert names(agg) == set()
    assert agg.statistics().components_evicted == 4


def test_a_reported_stream_is_evicted_like_a_component_and_a_binding_never() -> None:
    clock = FakeClock()
    agg = make(clock)
    agg.register_stream("a->b", from_component="a", to_component="b")
    agg.fold_events([Event("x", "processed", stream="events_only")])
    agg.fold_deltas([Delta("p", messages=2, stream="probe_stream")])
    clock.advance(30)
    agg.fold_events([Event("y", "processed", stream="events_only")])  # keeps it alive
    clock.advance(TTL)
    figs = agg.figures()
    assert set(figs.streaming.streams) == {"a->b", "events_only", "probe_stream"}
    assert set(figs.detailed_components) == {"y", "p"}  # x went, its stream is still used
    clock.advance(30.001)
    figs = agg.figures()
    assert set(figs.streaming.streams) == {"a->b", "probe_stream"}
    assert (figs.components_evicted, figs.streams_evicted) == (2, 1)


def test_a_full_table_evicts_what_is_due_before_it_rejects() -> None:
    clock = FakeClock()
    agg = make(clock, max_components=3)
    assert agg.fold_events([Event(n, "processed") for n in ("a", "b", "c")]) == []
    (r,) = agg.fold_events([Event("d", "processed")])
    assert "component limit 3" in r.reason
    clock.advance(TTL + 1)
    # no figures read since: the fold itself makes the room
    assert agg.fold_events([Event("d", "processed")]) == []
    assert agg.statistics().components == 1
    assert agg.statistics().rejected == {"cardinality": 1}


def test_churn_keeps_the_component_table_bounded() -> None:
    """20,000 distinct names, 500 a second, a 5 s TTL, figures read each second: never
    more than the names of the last TTL are held, and every other one is counted."""
    clock = FakeClock()
    agg = make(clock, ttl=5.0, max_components=1_000_000)
    agg.register_component("steady")
    per_tick, ticks = 500, 40
    most = 0
    for t in range(ticks):
        batch = [Event(f"c{t}-{i}", "processed") for i in range(per_tick)]
        batch.append(Event("steady", "processed"))
        assert agg.fold_events(batch) == []
        agg.figures()
        stats = agg.statistics()
        most = max(most, stats.components)
        assert len(agg._idle_components) <= stats.components  # one sweep entry at most each
        clock.advance(1.0)
    assert most <= 6 * per_tick + 1  # names of the last 5 s (and the current one), steady
    stats = agg.statistics()
    assert stats.components_evicted == ticks * per_tick - (stats.components - 1)
    assert "steady" in names(agg)


def test_an_evicted_components_firing_alert_resolves_then_expires() -> None:
    """One ``stopped`` event for a never-seen component: ComponentDown fires and the
    system is not healthy; after the TTL the component and its alert go, the alert shows
    resolved for the retention, then not at all."""
    s = System(builtin=True, retention=100.0)
    s.agg = make(s.clock)
    s.agg.register_component("api")
    s.fold(Event("api", "processed"), Event("ghost", "stopped"))
    snap = s.at(0)
    assert snap.system_status != "healthy"
    assert [(a.name, a.component) for a in snap.alerts] == [("ComponentDown", "ghost")]
    snap = s.at(TTL)
    assert [(a.name, a.component) for a in snap.alerts] == [("ComponentDown", "ghost")]
    snap = s.at(0.001)
    assert "ghost" not in snap.detailed_components
    assert snap.alerts == [] and snap.system_status == "healthy"
    (r,) = snap.resolved_alerts
    assert (r.name, r.component, r.resolved_at) == ("ComponentDown", "ghost", s.wall)
    assert snap.components_evicted == 1
    assert len(s.at(100).resolved_alerts) == 1
    assert s.at(0.001).resolved_alerts == []


def test_an_evicted_components_pending_alert_is_forgotten() -> None:
    s = System([AlertRule("Err", "error_rate > 0.1", for_="5m", level="critical")])
    s.agg = make(s.clock)
    half_failing(s, "ghost")
    assert [a.component for a in s.at(0).pending_alerts] == ["ghost"]
    snap = s.at(TTL + 0.001)
    assert (snap.alerts, snap.pending_alerts, snap.resolved_alerts) == ([], [], [])


def test_a_new_breaker_under_an_evicted_ones_name_starts_its_flaps_afresh() -> None:
    clock = FakeClock()
    agg = make(clock)
    judge = HealthJudge()
    reader = FigureReader()
    agg.fold_events([Event("b", "breaker", detail="open"), Event("b", "breaker", detail="closed")])
    for state in ("", "open", "closed"):
        if state:
            agg.fold_events([Event("b", "breaker", detail=state)])
        reader.read(judge.judge(agg.figures()))
        clock.advance(1)
    got = reader.read(judge.judge(agg.figures()))
    assert got["component"]["b"]["breaker_flaps"] == 2.0  # since the first reading
    clock.advance(TTL + 1)
    got = reader.read(judge.judge(agg.figures()))
    assert "b" not in got["component"]
    agg.fold_events([Event("b", "breaker", detail="open")])
    got = reader.read(judge.judge(agg.figures()))
    assert got["component"]["b"]["breaker_flaps"] == 0.0  # first sighting, as for any breaker
    agg.fold_events([Event("b", "breaker", detail="closed")])
    clock.advance(1)
    got = reader.read(judge.judge(agg.figures()))
    assert got["component"]["b"]["breaker_flaps"] == 1.0


def test_the_endpoint_takes_its_ttl_from_config_and_refuses_a_negative_one() -> None:
    assert MetricsEndpoint(port=0).aggregator.component_ttl_s == 600.0
    assert MetricsEndpoint(port=0, component_ttl_s=0).aggregator.component_ttl_s == 0.0
    with pytest.raises(ConfigError, match="component_ttl_s"):
        MetricsEndpoint(port=0, component_ttl_s=-1)


def test_services_known_from_otlp_spans_go_after_the_ttl() -> None:
    """An OTLP export is another process's report, as an event is: the services it made
    known are evicted when silent past the TTL, with their span windows; one that keeps
    exporting stays, and one the blueprint declares stays however silent."""
    from streammetrics.intake.otlp import OtlpIntake
    from streammetrics.intake.otlp_config import OtlpConfig
    from tests.otlp.builders import request, span

    clock = FakeClock()
    agg = make(clock)
    agg.register_component("declared-svc")
    intake = OtlpIntake(agg, OtlpConfig())
    batch = {"quiet-svc": [span(0.003)], "busy-svc": [span(0.003)], "declared-svc": [span()]}
    assert intake.fold(request(batch)).accepted == 3
    clock.advance(TTL / 2)
    intake.fold(request({"busy-svc": [span(0.004, error=True)]}))
    clock.advance(TTL / 2 + 0.001)
    figs = agg.figures()
    assert set(figs.detailed_components) == {"busy-svc", "declared-svc"}
    assert figs.components_evicted == 1
    busy = figs.detailed_components["busy-svc"]
    assert (busy.items_processed, busy.errors_encountered) == (1, 1)
    clock.advance(TTL)
    assert names(agg) == {"declared-svc"}
    assert agg.statistics().components_evicted == 2
