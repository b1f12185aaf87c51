"""A judgement built on the last one (judging, and reading alert figures of, only the
components the read changed) is exactly the judgement of a full pass, tick after tick:
components changing, quiet, stopping, breakers moving, streams stalling and recovering,
components evicted, rules with ``for`` durations firing and resolving on quiet
components, and the thresholds changed midway."""

from __future__ import annotations

import random

import msgspec
import pytest

from streammetrics import Event
from streammetrics.aggregator import Aggregator
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.alerts.rules import AlertRule
from streammetrics.judge.health import HealthConfig, HealthJudge
from streammetrics.snapshot import ComponentTable, Figures, ProcessStats, Snapshot
from tests.support.http_app import FakeClock

RULES = [
    AlertRule("Slow", "p99 > 0.5", for_="20s"),
    AlertRule("Failing", "error_rate > 0.2", for_="15s"),
    AlertRule("Unwell", "health < 0.9"),
    AlertRule("Stuck", "stalled_seconds > 30", scope="stream"),
    # Reads the process's figures, which every component instance shares.
    AlertRule("Heavy", "memory_usage_mb > 150 and errors_encountered > 0", scope="component"),
]


def _copy(figures: Figures) -> Figures:
    """The same figures in new objects throughout, in a plain dict: a judge given these
    judges every component afresh."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(figures), type=Figures)


def _data(snap: Snapshot) -> tuple[bytes, list[object]]:
    """The snapshot as encoded (dict order included), alerts and recommendations aside,
    and those as data in one order (the order instances start in may differ)."""
    alerts = [
        *snap.alerts,
        *snap.pending_alerts,
        *snap.resolved_alerts,
    ]
    rest = msgspec.structs.replace(
        snap, alerts=[], pending_alerts=[], resolved_alerts=[], recommendations=[]
    )
    keyed = sorted(
        (msgspec.to_builtins(a) for a in [*alerts, *snap.recommendations]),
        key=lambda a: msgspec.json.encode(a),
    )
    return msgspec.json.encode(rest), keyed


class _Buffer:
    """A binding's buffer whose level the test sets."""

    def __init__(self) -> None:
        self.used = 0

    def __call__(self) -> tuple[int, int]:
        return self.used, 10


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_judgement_is_the_full_one_over_random_ticks(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    agg = Aggregator(
        clock=clock.monotonic, wall=clock.wall, max_components=1000, component_ttl_s=900.0
    )
    names = [f"c{i:03d}" for i in range(120)]
    buffers = {}
    for i in range(0, 20, 2):  # bindings c000->c001, c002->c003, ...: declared, never evicted
        agg.register_component(names[i])
        agg.register_component(names[i + 1], breaker=i % 4 == 0)
        key = f"{names[i]}->{names[i + 1]}:in"
        buffers[key] = _Buffer()
        agg.register_stream(
            key, from_component=names[i], to_component=names[i + 1], buffer=buffers[key]
        )
    kept = HealthJudge(HealthConfig(stall_timeout_s=20.0), alerts=AlertEngine(RULES))
    full = HealthJudge(HealthConfig(stall_timeout_s=20.0), alerts=AlertEngine(RULES))
    incremental = 0
    seen: set[str] = set()
    for tick in range(70):
        batch: list[Event] = []
        for name in rng.sample(names, rng.choice([0, 1, 2, 5, 30])):
            kind = rng.choice(["processed", "processed", "error", "heartbeat"])
            batch.append(Event(name, kind, latency=rng.choice([0.01, 0.2, 0.9])))
        if rng.random() < 0.1:
            batch.append(Event(rng.choice(names), rng.choice(["stopped", "started"])))
        if rng.random() < 0.15:
            batch.append(Event(names[4 * rng.randrange(5) + 1], "breaker", detail="open"))
        if rng.random() < 0.15:
            batch.append(Event(names[4 * rng.randrange(5) + 1], "breaker", detail="closed"))
        for buf in buffers.values():
            if rng.random() < 0.2:
                buf.used = rng.choice([0, 0, 3, 8])
        agg.fold_events(batch)
        if tick == 40:  # other thresholds: every earlier judgement is void
            kept.health = full.health = HealthConfig(error_budget=0.3, stall_timeout_s=10.0)
        process = ProcessStats(memory_usage_mb=rng.choice([100.0, 200.0]), cpu_usage_percent=5.0)
        figures = agg.figures(process=process)
        table = figures.detailed_components
        assert isinstance(table, ComponentTable)
        incremental += table.changed is not None
        got = kept.judge(figures)
        want = full.judge(_copy(figures))
        assert _data(got) == _data(want), tick
        seen |= {f"{a.name}:{a.state}" for a in [*got.alerts, *got.resolved_alerts]}
        seen |= {"stall" for r in got.reasons if "stalled" in r.reason}
        clock.advance(rng.choice([1.0, 5.0, 12.0, 40.0, 330.0, 1000.0]))
    assert incremental > 40  # most ticks were built on the one before
    assert agg.statistics().components_evicted > 0
    # What the sequence went through: rules with a ``for`` fired and resolved, and stalls.
    assert {"Failing:firing", "Failing:resolved", "Slow:firing", "Heavy:resolved", "stall"} <= seen
