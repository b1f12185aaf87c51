"""The alert engine tests again only the rule instances whose read figures moved (a
status whose inputs of the figures read are equal keeps its figures): over random busy
ticks, its reports are exactly those of an engine that tests every instance at every
tick, order included; and a reader that misses an input is caught by that comparison."""

from __future__ import annotations

import random

import msgspec
import pytest

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.judge.alerts import figures
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.judge.health import HealthJudge
from streammetrics.snapshot import Snapshot
from tests.support.http_app import FakeClock

RULES = [
    AlertRule("Slow", "p99 > 0.5", for_="5s"),
    AlertRule("Failing", "error_rate > 0.2 and errors >= 1", for_="3s", level="critical"),
    AlertRule("Unwell", "health < 0.9"),
]


def _full(engine: AlertEngine) -> AlertEngine:
    """``engine`` made to test every instance of every rule at every tick."""
    engine._reader.changed_for = lambda used: None  # type: ignore[method-assign]
    return engine


def _report(snap: Snapshot) -> bytes:
    """The judgement, alerts and recommendations in the order given."""
    return msgspec.json.encode(snap)


def _first_mismatch(seed: int, *, broken: bool = False) -> int | None:
    """The first tick at which the shortcut engine's snapshot differs from the full one's."""
    rng = random.Random(seed)
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall, max_components=1000)
    names = [f"c{i:03d}" for i in range(80)]
    for i in range(0, 8, 2):
        agg.register_component(names[i], breaker=True)
    kept = HealthJudge(alerts=AlertEngine(RULES))
    if broken:  # a reader that sees only the inputs of ``up``: it misses the others
        reader = kept.alerts._reader  # type: ignore[union-attr]
        reader._inputs = figures._inputs(["up"])
    full = HealthJudge(alerts=_full(AlertEngine(RULES)))
    for tick in range(60):
        batch = [Event(n, "processed", latency=0.01) for n in rng.sample(names, 60)]
        for name in rng.sample(names, rng.choice([0, 1, 3, 10])):
            kind = rng.choice(["error", "error", "stopped", "started", "processed"])
            batch.append(Event(name, kind, latency=rng.choice([0.01, 0.9])))
        if rng.random() < 0.2:
            batch.append(Event(rng.choice(names[:8:2]), "breaker", detail="open"))
        if rng.random() < 0.2:
            batch.append(Event(rng.choice(names[:8:2]), "breaker", detail="closed"))
        agg.fold_events(batch)
        figs = agg.figures()
        if _report(kept.judge(figs)) != _report(full.judge(figs)):
            return tick
        clock.advance(rng.choice([1.0, 1.0, 2.0, 7.0, 70.0]))
    return None


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_testing_only_moved_figures_gives_the_full_evaluation(seed: int) -> None:
    assert _first_mismatch(seed) is None


def test_a_reader_that_misses_an_input_is_caught() -> None:
    assert any(_first_mismatch(seed, broken=True) is not None for seed in (1, 2, 3, 4))


def test_a_busy_tick_with_no_rule_figure_moved_tests_no_instance_again() -> None:
    """1,000 components whose rates move every tick while their error rate, state and
    quantiles do not: no rule instance is tested again, and the report is the full one."""
    clock = FakeClock()
    agg = Aggregator(clock=clock.monotonic, wall=clock.wall, max_components=2000)
    names = [f"c{i:04d}" for i in range(1000)]
    engine = AlertEngine()
    judge = HealthJudge(alerts=engine)
    full = HealthJudge(alerts=_full(AlertEngine()))
    for _ in range(3):
        agg.fold_events([Event(n, "processed", latency=0.004) for n in names])
        judge.judge(agg.figures())
        full.judge(agg.figures())
        clock.advance(1)
    agg.fold_events([Event(n, "processed", latency=0.004) for n in names])
    figs = agg.figures()
    snap = judge.judge(figs)
    reader = engine._reader
    assert len(reader.figures) < len(figures.COMPONENT_FIGURES)  # only the rules' figures
    assert reader.changed == set()
    assert all(not reader.changed_for([f]) for f in reader.figures)
    assert _report(snap) == _report(full.judge(figs))


def test_every_component_figure_names_its_inputs() -> None:
    own = set(figures.COMPONENT_FIGURES) - figures.PROCESS_FIGURES
    assert set(figures._INPUTS) == own
    with pytest.raises(ValueError, match="unknown component figures"):
        figures.FigureReader(figures=["nope"])
