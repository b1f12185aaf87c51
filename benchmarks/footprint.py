"""Footprint: what one component costs to keep, what a tick costs at 10,000, and how
exact the quantiles are.

- **Memory**: RSS per component with traffic in every slot of every window (latency
  histograms included), after a full garbage collection, measured in a child process
  of its own (a clean heap: memory freed by other cases would hide growth), with the
  snapshot of those components held as an endpoint holds it.
- **Tick**: one endpoint tick (figures read in chunks, health judged, alert rules
  evaluated) at 10,000 components when 1 % and when 100 % of them reported since the
  previous tick (the others quiet: nothing in their windows' views), and the longest
  the event loop went without running meanwhile
  (a probe task that sleeps 1 ms and measures how late it wakes). Beside the stall, what
  it was made of: the CPU time of the loop's thread in it (the rest is the process
  waiting for a core on a busy machine) and the garbage collector's pauses in it
  (``gc.callbacks``), and the collector's time per tick.
- **Garbage collector**: the objects the collector tracks per component (a gen-2 pass
  walks every one of them) after the memory fill, by type; the collections during the
  timed ticks by generation, the longest pause of each (``gc.callbacks``), and one full
  ``gc.collect()`` over the tick's heap timed on its own (what a gen-2 pass costs
  whenever one comes due); then the all-changed ticks again under the endpoint's
  collector policy (``config.gc``: frozen after a first full collection), with the same
  figures.
- **Quantile accuracy**: p50/p95/p99 relative error against the exact quantiles of a
  lognormal, a narrow uniform and a bimodal stream, for the ladder the windows count in
  now (the √2 ladder merged with the exported boundaries) beside the √2 ladder alone
  (what they counted in before the exported buckets became configurable), each as the
  windows read it (interpolation clamped to the observed min and max: ``*_err_ladder``,
  ``*_err_sqrt2``) and, as a breakdown, as the bucket histogram alone gives it (whole
  buckets, what the windows read before the clamp: ``*_err_*_unclamped``).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from streammetrics.aggregator import Aggregator
from streammetrics.buckets import DEFAULT_LADDER, LATENCY_BOUNDS
from streammetrics.collector_policy import CollectorPolicy
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Event
from streammetrics.windows import RollingWindow, quantile

from ._report import CaseResult, Target, progress

__all__ = ("run_case",)

_MEMORY_TARGET_KB = 16.0
_TICK_1PCT_MS = 20.0
_TICK_ALL_MS = 150.0
_LAG_MS = 10.0


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- garbage collector ------------------------------------------------------------------


class _GcPauses:
    """Every collection while installed (``gc.callbacks``): its generation and seconds."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t0))

    def __enter__(self) -> _GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def figures(self) -> dict[str, float]:
        """Collections and the longest pause (ms) per generation, and the longest of all."""
        out: dict[str, float] = {}
        for gen in (0, 1, 2):
            ms = [s * 1000 for g, s in self.pauses if g == gen]
            out[f"gc_gen{gen}_collections"] = len(ms)
            out[f"gc_gen{gen}_longest_ms"] = max(ms, default=0.0)
        out["gc_longest_pause_ms"] = max((s * 1000 for _, s in self.pauses), default=0.0)
        return out


def _tracked_by_type() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects())


def _tracked_figures(before: Counter[str], n: int, top: int = 8) -> dict[str, Any]:
    """Objects the collector tracks now beyond ``before``, per component, in all and for
    the ``top`` types with most."""
    grown = _tracked_by_type() - before
    return {
        "gc_tracked_per_component": sum(grown.values()) / n,
        "gc_tracked_by_type": ", ".join(f"{k} {v / n:.2f}" for k, v in grown.most_common(top)),
    }


def _full_collect_ms() -> float:
    """The seconds (ms) of one full collection over the heap as it is."""
    t0 = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - t0) * 1000


# -- memory -----------------------------------------------------------------------------


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _fill(n: int, seconds: int, seed: int = 3) -> tuple[Aggregator, _Clock]:
    """``n`` components with a timed event in every slot of every window over the last
    ``seconds``: every second of the last 70 (the one-second slots), one in each ten
    seconds before (each ten-second slot)."""
    clock = _Clock()
    agg = Aggregator(clock=clock, max_components=n)
    rng = random.Random(seed)
    names = [f"component-{i:05d}" for i in range(n)]
    lat = [rng.lognormvariate(-5.3, 1.0) for _ in range(4096)]
    steps = [s for s in range(seconds) if s >= seconds - 70 or s % 10 == 0]
    for s in steps:
        clock.t = 1000.0 + s + 0.5
        agg.fold_events(
            [Event(name, "processed", latency=lat[(i + s) & 4095]) for i, name in enumerate(names)]
        )
    return agg, clock


def _child_memory(n: int) -> dict[str, Any]:
    """Run in a child process: RSS per component after filling every slot, and the
    objects the collector tracks per component then (the aggregator's and the snapshot's)."""
    gc.collect()
    base = _rss()
    tracked = _tracked_by_type()
    agg, _clock = _fill(n, 310)  # 300 s of coarse slots and the 60 one-second slots
    snap = HealthJudge().judge(agg.figures())
    gc.collect()
    used = _rss() - base
    out = {"components": n, "rss_mb": used / 2**20, "per_component_kb": used / n / 1024}
    out |= _tracked_figures(tracked, n)
    out["gc_full_collect_ms"] = _full_collect_ms()
    del snap
    return out


def _memory(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.footprint", "--child-memory", str(n)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- tick -------------------------------------------------------------------------------


class _Pauses:
    """Seconds the garbage collector has run so far (``gc.callbacks``), by generation."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._t0

    def total(self) -> float:
        return sum(self.seconds)


async def _timed_tick(agg: Aggregator, judge: HealthJudge) -> dict[str, float]:
    """Seconds of one tick as an endpoint makes it, the longest loop stall meanwhile, and
    what that stall was made of: the CPU time of the loop's thread in it (the rest is the
    process waiting for a core) and the garbage collector's pauses in it; and the
    collector's pauses over the whole tick."""
    lag = lag_cpu = lag_gc = 0.0
    done = False
    pauses = _Pauses()

    async def probe() -> None:
        nonlocal lag, lag_cpu, lag_gc
        while not done:
            t0, c0, g0 = time.perf_counter(), time.thread_time(), pauses.total()
            await anyio.sleep(0.001)
            late = time.perf_counter() - t0 - 0.001
            if late > lag:
                lag, lag_cpu, lag_gc = late, time.thread_time() - c0, pauses.total() - g0

    gc.callbacks.append(pauses)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            await anyio.sleep(0.01)
            g0 = list(pauses.seconds)
            t0 = time.perf_counter()
            figures = await agg.figures_async()
            await judge.judge_async(figures)
            took = time.perf_counter() - t0
            gcs = [b - a for a, b in zip(g0, pauses.seconds, strict=True)]
            done = True
    finally:
        gc.callbacks.remove(pauses)
    return {
        "took": took,
        "lag": lag,
        "lag_cpu": lag_cpu,
        "lag_gc": lag_gc,
        "gc": sum(gcs),
        "gc2": gcs[2],
    }


def _tick(n: int, runs: int) -> list[dict[str, Any]]:
    """Ticks after the components went quiet (past the 300 s view): with 1 % of them
    reporting since the previous tick, then all of them."""
    gc.collect()
    tracked = _tracked_by_type()
    agg, clock = _fill(n, 70)
    judge = HealthJudge(alerts=AlertEngine())
    names = [f"component-{i:05d}" for i in range(n)]
    clock.t += 320.0
    anyio.run(_timed_tick, agg, judge)  # the first tick after: every figure read once
    gc.collect()
    # What the aggregator, the judge and the alert engine keep between ticks.
    kept = _tracked_figures(tracked, n)
    rows: list[dict[str, Any]] = []
    for share in (0.01, 1.0):
        changed = names[: max(1, int(n * share))]
        ticks: list[dict[str, float]] = []
        with _GcPauses() as pauses:
            for _ in range(runs):
                clock.t += 1.0
                agg.fold_events([Event(c, "processed", latency=0.004) for c in changed])
                ticks.append(anyio.run(_timed_tick, agg, judge))
        times = sorted(t["took"] for t in ticks)
        worst = max(ticks, key=lambda t: t["lag"])
        rows.append(
            {
                "measure": f"tick, {share:.0%} changed",
                "components": n,
                "changed": len(changed),
                "tick_ms": times[len(times) // 2] * 1000,
                "max_loop_lag_ms": worst["lag"] * 1000,
                # What the longest stall was made of, and the collector over the ticks.
                "max_loop_lag_cpu_ms": worst["lag_cpu"] * 1000,
                "max_loop_lag_gc_ms": worst["lag_gc"] * 1000,
                "gc_ms_per_tick": sum(t["gc"] for t in ticks) / runs * 1000,
                "gc_gen2_ms_max": max(t["gc2"] for t in ticks) * 1000,
                **pauses.figures(),
                **kept,
                "gc_full_collect_ms": _full_collect_ms(),
            }
        )
        progress(
            f"footprint: tick {share:.0%} changed: {rows[-1]['tick_ms']:.1f} ms, longest "
            f"collection {rows[-1]['gc_longest_pause_ms']:.1f} ms"
        )
    rows.append(_frozen_ticks(agg, judge, clock, names, runs))
    return rows


def _frozen_ticks(
    agg: Aggregator, judge: HealthJudge, clock: _Clock, names: list[str], runs: int
) -> dict[str, Any]:
    """The all-changed ticks again under an endpoint's collector policy (``config.gc``,
    its defaults: the first call collects once and freezes, ``thaw_s`` is longer than
    the run)."""
    policy = CollectorPolicy(clock=clock)
    policy.after_tick()
    first = policy.statistics().last_full_collection_ms
    times: list[float] = []
    lags: list[float] = []
    try:
        with _GcPauses() as pauses:
            for _ in range(runs):
                clock.t += 1.0
                agg.fold_events([Event(c, "processed", latency=0.004) for c in names])
                t = anyio.run(_timed_tick, agg, judge)
                policy.after_tick()
                times.append(t["took"])
                lags.append(t["lag"])
        full = _full_collect_ms()  # what a full pass walks while frozen
    finally:
        policy.close()
    times.sort()
    row = {
        "measure": "collector frozen (config.gc): tick, 100% changed",
        "components": len(names),
        "changed": len(names),
        "tick_ms": times[len(times) // 2] * 1000,
        "max_loop_lag_ms": max(lags) * 1000,
        **pauses.figures(),
        "gc_full_collect_ms": full,
        "gc_first_freeze_collect_ms": first,
        "gc_freezes": policy.statistics().freezes,
    }
    progress(
        f"footprint: frozen, tick 100% changed: {row['tick_ms']:.1f} ms, longest collection "
        f"{row['gc_longest_pause_ms']:.1f} ms"
    )
    return row


# -- quantile accuracy ------------------------------------------------------------------


def _streams() -> dict[str, Callable[[random.Random], float]]:
    return {
        "lognormal (median 5 ms, sigma 1)": lambda r: r.lognormvariate(-5.3, 1.0),
        "narrow uniform (10-11 ms)": lambda r: r.uniform(0.010, 0.011),
        "bimodal (2 ms and 200 ms)": lambda r: (
            r.lognormvariate(-6.2, 0.2) if r.random() < 0.7 else r.lognormvariate(-1.6, 0.2)
        ),
    }


def _accuracy(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, draw in _streams().items():
        rng = random.Random(5)
        xs = [draw(rng) for _ in range(n)]
        exact = sorted(xs)
        row: dict[str, Any] = {"stream": name}
        for label, bounds in (("ladder", DEFAULT_LADDER.bounds), ("sqrt2", LATENCY_BOUNDS)):
            w = RollingWindow(0.0, bounds=bounds)
            for x in xs:
                w.add(0.5, latency=x)
            v = w.view(0.9, 10)
            hist = w.total_histogram()
            for q, got in (("p50", v.p50), ("p95", v.p95), ("p99", v.p99)):
                want = exact[min(n - 1, int(float(q[1:]) / 100 * n))]
                row[f"{q}_err_{label}"] = abs((got or 0.0) - want) / want
                whole = quantile(hist, float(q[1:]) / 100, bounds) or 0.0
                row[f"{q}_err_{label}_unclamped"] = abs(whole - want) / want
        rows.append(row)
    return rows


# -- the case ---------------------------------------------------------------------------


def run_case(
    components: int = 10_000, *, quick: bool = True, accuracy_samples: int | None = None
) -> CaseResult:
    result = CaseResult("footprint", params={"components": components})
    progress(f"footprint: memory of {components:,} components (child process) ...")
    mem = _memory(components)
    result.rows.append({"measure": "memory", **mem})
    ticks = _tick(components, runs=3 if quick else 7)
    result.rows += ticks
    acc = _accuracy(accuracy_samples or (50_000 if quick else 500_000))
    result.rows += acc
    result.targets.append(
        Target(
            f"RSS per component, traffic in every slot ({components:,} components)",
            mem["per_component_kb"],
            "<",
            _MEMORY_TARGET_KB,
            "KB",
            "after a full GC, snapshot held, in a child process",
        )
    )
    one, every, frozen = ticks[:3]
    stall = max(ticks[:2], key=lambda r: r["max_loop_lag_ms"])
    result.targets += [
        Target(f"tick, 1 % of {components:,} changed", one["tick_ms"], "<", _TICK_1PCT_MS, "ms"),
        Target(f"tick, all {components:,} changed", every["tick_ms"], "<", _TICK_ALL_MS, "ms"),
        Target(
            "longest event-loop stall during a tick",
            max(one["max_loop_lag_ms"], every["max_loop_lag_ms"]),
            "<",
            _LAG_MS,
            "ms",
            f"{stall['measure']}: of it, CPU time of the loop's thread "
            f"{stall['max_loop_lag_cpu_ms']:.1f} ms (the rest waiting for a core), garbage "
            f"collection {stall['max_loop_lag_gc_ms']:.1f} ms; under the endpoint's default "
            f"collector policy (config.gc, frozen), all changed: "
            f"{frozen['max_loop_lag_ms']:.1f} ms, longest collection "
            f"{frozen['gc_longest_pause_ms']:.1f} ms",
        ),
    ]
    worse = 0.0
    mean = {"ladder": 0.0, "sqrt2": 0.0}
    for row in acc:
        for q in ("p50", "p95", "p99"):
            worse = max(worse, row[f"{q}_err_ladder"] - row[f"{q}_err_sqrt2"])
            for k in mean:
                mean[k] += row[f"{q}_err_{k}"] / (3 * len(acc))
    result.targets.append(
        Target(
            "mean quantile error, ladder minus √2 ladder (3 streams, p50/p95/p99)",
            mean["ladder"] - mean["sqrt2"],
            "<",
            1e-9,
            "",
            f"ladder {mean['ladder']:.4f}, √2 ladder {mean['sqrt2']:.4f}: 0 or less is "
            "not worse on average",
        )
    )
    result.targets.append(
        Target(
            "quantile error, ladder minus √2 ladder (worst of 3 streams, 3 quantiles each)",
            worse,
            "<",
            1e-9,
            "",
            "0 or less: not worse than before the exported buckets became configurable",
        )
    )
    return result


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.footprint")
    parser.add_argument("--child-memory", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--components", type=int, default=10_000)
    args = parser.parse_args()
    if args.child_memory:
        print(json.dumps(_child_memory(args.child_memory)))
        return
    r = run_case(args.components)
    print(json.dumps(r.as_dict(), indent=2))


if __name__ == "__main__":
    _main()
