"""Churn: RSS while distinct component names keep arriving and going quiet; with
``component_ttl_s`` it must stay bounded.

One aggregator on a simulated clock (one tick = one simulated second) folds, each tick, one
batch of new names (each ``processed`` with a latency, every tenth also ``stopped`` so that
``ComponentDown`` fires on it) plus a share (``again``) of the previous tick's names once
more, so those live two ticks (their timer reset once) before they fall silent. Each tick
the figures are read and judged with the built-in alert rules, as an endpoint's tick does,
which evicts the names silent past the TTL (and resolves, then forgets, their alerts). RSS
is read after a full garbage collection at every tenth of the run; the target compares the
end with the reading at 10 %, when the table has long reached its steady size.
"""

from __future__ import annotations

import gc
import time

from streammetrics.aggregator import Aggregator
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Event

from ._report import BenchmarkError, CaseResult, Target, progress
from .memory import rss_mb

__all__ = ("run_case",)


class _Clock:
    """Simulated monotonic seconds (the wall clock follows it)."""

    def __init__(self) -> None:
        self.t = 0.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t


def _batch(names: list[str], again: list[str]) -> list[Event]:
    out = [Event(n, "processed", latency=0.001 * (1 + i % 50)) for i, n in enumerate(names)]
    out += [Event(n, "stopped") for n in names[::10]]
    out += [Event(n, "processed", latency=0.002) for n in again]
    return out


def run_case(
    names: int = 100_000,
    *,
    per_tick: int = 1_000,
    ttl_s: float = 5.0,
    retention_s: float = 10.0,
    again: float = 1.0,
    growth_limit_mb: float = 20.0,
) -> CaseResult:
    """Fold ``names`` distinct names, ``per_tick`` new ones a simulated second.

    The cost is the figures read of every tick, which grows with the names held: about
    ``per_tick`` x (TTL + 1 + ``again``), so quick mode uses a 1 s TTL."""
    if names < 10 * per_tick or names % per_tick:
        raise ValueError("names must be a multiple of per_tick, at least ten ticks' worth")
    clock = _Clock()
    agg = Aggregator(clock=clock.mono, wall=clock.wall, component_ttl_s=ttl_s)
    agg.register_component("steady", "Store")  # declared: it must survive the whole run
    engine = AlertEngine(resolved_retention_s=retention_s)
    judge = HealthJudge(alerts=engine)
    ticks = names // per_tick
    marks = {max(1, ticks * k // 10) for k in range(1, 11)}
    result = CaseResult(
        "churn",
        params={
            "names": names,
            "per_tick": per_tick,
            "component_ttl_s": ttl_s,
            "alert_retention_s": retention_s,
            "again": again,
            "max_components": agg.max_components,
        },
    )
    gc.collect()
    base = rss_mb()
    result.params["baseline_rss_mb"] = base
    previous: list[str] = []
    most = 0
    firing_most = 0
    t0 = time.perf_counter()
    for tick in range(1, ticks + 1):
        new = [f"c{tick}-{i}" for i in range(per_tick)]
        batch = _batch(new, previous[: round(again * len(previous))])
        batch.append(Event("steady", "processed", latency=0.001))
        if agg.fold_events(batch):
            raise BenchmarkError(f"churn: tick {tick}: events rejected")
        snap = judge.judge(agg.figures())
        most = max(most, snap.components.total)
        firing_most = max(firing_most, len(snap.alerts) + len(snap.resolved_alerts))
        previous = new
        clock.t += 1.0
        if tick in marks:
            gc.collect()
            rss = rss_mb()
            result.rows.append(
                {
                    "names_so_far": tick * per_tick,
                    "components_held": snap.components.total,
                    "evicted": snap.components_evicted,
                    "alerts_kept": len(snap.alerts) + len(snap.resolved_alerts),
                    "rss_mb": rss,
                    "growth_mb": rss - base,
                    "seconds": time.perf_counter() - t0,
                }
            )
            progress(
                f"churn: {tick * per_tick:,} names, {snap.components.total:,} held, "
                f"{snap.components_evicted:,} evicted, RSS {rss:.1f} MB"
            )
    stats = agg.statistics()
    # Every name but those of the last ticks went, and none was rejected on the way.
    held = stats.components - 1
    if stats.components_evicted + held != names or stats.rejected:
        raise BenchmarkError(
            f"churn: {stats.components_evicted:,} evicted + {held:,} held != {names:,} names "
            f"(rejected {stats.rejected})"
        )
    if "steady" not in agg.figures().detailed_components:
        raise BenchmarkError("churn: the declared component was evicted")
    result.params["components_held_most"] = most
    result.params["alerts_kept_most"] = firing_most
    tenth = result.rows[0]
    last = result.rows[-1]
    result.targets = [
        Target(
            f"churn: RSS growth from 10 % to the end of {names:,} names (TTL {ttl_s:g} s)",
            last["rss_mb"] - tenth["rss_mb"],
            "<",
            growth_limit_mb,
            "MB",
            f"table held at most {most:,} components; {last['evicted']:,} evicted",
        )
    ]
    return result
