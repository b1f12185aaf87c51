"""A tick's work follows what changed: a quiet component's figures, judgement and alert
figures are kept from the tick before (the same objects), and the outcome is exactly what
reading everything again would give."""

from __future__ import annotations

import random

import msgspec

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.judge.health import HealthJudge
from streammetrics.snapshot import Alert, Figures
from tests.support.http_app import FakeClock

RULES = [
    AlertRule("Slow", "p99 > 0.5", for_="2s"),
    AlertRule("Failing", "error_rate > 0.2"),
    AlertRule("Busy", "items_per_second > 3 and errors >= 1"),
]


def _agg(clock: FakeClock) -> Aggregator:
    return Aggregator(clock=clock.monotonic, wall=clock.wall, max_components=1000)


def test_a_quiet_components_figures_are_kept_and_a_report_reads_them_again() -> None:
    clock = FakeClock()
    agg = _agg(clock)
    agg.fold_events([Event("a", "processed", latency=0.01), Event("b", "processed")])
    clock.advance(400)  # past the 300 s view: both quiet
    first = agg.figures().detailed_components
    clock.advance(7.3)
    second = agg.figures().detailed_components
    assert second["a"] is first["a"] and second["b"] is first["b"]
    agg.fold_events([Event("a", "error", detail="boom")])
    third = agg.figures().detailed_components
    assert third["b"] is first["b"]
    assert third["a"] is not first["a"]
    assert (third["a"].errors_encountered, third["a"].last_error) == (1, "boom")


def test_a_component_with_traffic_in_its_views_is_read_every_tick() -> None:
    clock = FakeClock()
    agg = _agg(clock)
    agg.fold_events([Event("a", "processed")])
    clock.advance(30)  # still in the 60 s and 300 s views: its rates move with time
    one = agg.figures().detailed_components["a"]
    clock.advance(1)
    two = agg.figures().detailed_components["a"]
    assert two is not one
    assert two.windows["300s"].items_per_second < one.windows["300s"].items_per_second


def test_the_judge_keeps_the_judgement_of_the_same_figures() -> None:
    clock = FakeClock()
    agg = _agg(clock)
    agg.fold_events([Event("a", "processed"), Event("b", "error")])
    clock.advance(400)
    judge = HealthJudge()
    s1 = judge.judge(agg.figures())
    clock.advance(1)
    s2 = judge.judge(agg.figures())
    assert s2.detailed_components["a"] is s1.detailed_components["a"]
    assert (s2.health_score, s2.components) == (s1.health_score, s1.components)


def _decoded(alerts: list[Alert]) -> list[object]:
    """The alerts as data, in one order (the order alerts start in may differ)."""
    return sorted(
        (msgspec.to_builtins(a) for a in alerts),
        key=lambda a: (a["name"], a["component"] or "", a["state"]),
    )


def _copy(figures: Figures) -> Figures:
    """The same figures in new objects throughout: nothing a judge could recognise."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(figures), type=Figures)


def test_incremental_rules_give_what_a_full_evaluation_gives() -> None:
    """One judge kept from tick to tick (testing again only the components that changed)
    and, at every tick, a new one that replays the whole history from copies (testing every
    instance each time): their firing, pending and resolved alerts agree at every tick."""
    rng = random.Random(4)
    clock = FakeClock()
    agg = _agg(clock)
    names = [f"c{i}" for i in range(60)]
    kept = HealthJudge(alerts=AlertEngine(RULES, builtin=True))
    history = []
    for tick in range(40):
        batch = []
        for name in rng.sample(names, rng.randrange(0, 12)):
            kind = "error" if rng.random() < 0.3 else "processed"
            batch.append(Event(name, kind, latency=rng.choice([0.01, 0.2, 0.9])))
        if tick % 13 == 12:
            clock.advance(330)  # everyone goes quiet for a while
        agg.fold_events(batch)
        snap = kept.judge(agg.figures())
        history.append(agg.figures())
        fresh = HealthJudge(alerts=AlertEngine(RULES, builtin=True))
        # Replayed from copies, so that every instance is tested again at each tick.
        for figures in history[:-1]:
            fresh.judge(_copy(figures))
        want = fresh.judge(_copy(history[-1]))
        for attr in ("alerts", "pending_alerts", "resolved_alerts"):
            assert _decoded(getattr(snap, attr)) == _decoded(getattr(want, attr)), (tick, attr)
        clock.advance(1)


def test_alerts_evaluated_in_steps_let_the_loop_in_and_agree_with_one_pass() -> None:
    """Chunked (as a tick runs them on the loop) or in one pass: the same report."""
    clock = FakeClock()
    agg = _agg(clock)
    agg.fold_events([Event(f"c{i}", "error" if i % 3 else "processed") for i in range(700)])
    judge = HealthJudge()
    snap = judge.judge(agg.figures())
    chunked = AlertEngine(RULES)
    whole = AlertEngine(RULES)
    steps = chunked.evaluate_steps(snap, chunk=100)
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            got = done.value
            break
        yields += 1
    assert yields >= 7  # every 100 components read, and after each rule
    want = whole.evaluate(snap)
    for attr in ("alerts", "pending_alerts", "resolved_alerts"):
        assert _decoded(getattr(got, attr)) == _decoded(getattr(want, attr))
    assert len(want.alerts) > 0
