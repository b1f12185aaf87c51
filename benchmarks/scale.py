"""Scale: what a tick costs as components grow, and that it does not grow with events.

For each size: the snapshot (``Aggregator.figures()`` judged by a ``HealthJudge``:
windows, health), ``AlertEngine.evaluate``
(the built-in rules and recommendations), the Prometheus render of that snapshot
(what ``/metrics`` serves: ``ExpositionWriter.render``, cold, i.e. with every
per-component block written anew as when every component changed, and warm, every block
reused; beside it prometheus-client's ``generate_latest`` over the ``SnapshotCollector``,
the reference and what ``/metrics`` served before; text format and OpenMetrics) and the
``/metrics/json`` body (``metrics_response`` encoded by msgspec), each timed as the median
of a few runs, with the size of each body. Then the same component count with 10x the
events: a snapshot must cost the same.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

from streammetrics.aggregator import Aggregator
from streammetrics.http.responses import metrics_response
from streammetrics.judge.alerts.engine import AlertEngine
from streammetrics.judge.health import HealthJudge
from streammetrics.model.events import Event
from streammetrics.prometheus.collector import SnapshotCollector
from streammetrics.prometheus.exposition import ExpositionWriter
from streammetrics.snapshot import Snapshot

from ._report import CaseResult, Target, progress
from ._seed import seeded_aggregator

__all__ = ("render_direct", "render_prometheus", "run_case", "timed")

T = TypeVar("T")


def timed(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    """Median seconds of ``runs`` calls (after one untimed warm-up), and the last result."""
    out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _interleaved(a: Callable[[], T], b: Callable[[], T], runs: int) -> tuple[float, T, float, T]:
    """Median seconds of ``a`` and of ``b``, called in turn so that a busy moment of the
    machine hits both alike; and the last result of each."""
    ra, rb = a(), b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ra = a()
        t1 = time.perf_counter()
        rb = b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), ra, statistics.median(tb), rb


def render_prometheus(snap: Snapshot, openmetrics: bool = False) -> bytes:
    """The reference: prometheus-client's writer over the ``SnapshotCollector``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap))
    if openmetrics:
        om: bytes = om_generate_latest(reg)  # type: ignore[no-untyped-call]
        return om
    body: bytes = generate_latest(reg)
    return body


def render_direct(snap: Snapshot, openmetrics: bool = False) -> bytes:
    """What ``/metrics`` serves, cold: a new writer, so every block is written."""
    return ExpositionWriter().render(snap, openmetrics=openmetrics)


class _Cpu:
    """Wraps a call to record the CPU seconds of each (``time.process_time``): steadier
    than wall time when other processes share the CPUs."""

    def __init__(self, fn: Callable[[], bytes]) -> None:
        self._fn = fn
        self.seconds: list[float] = []

    def __call__(self) -> bytes:
        t0 = time.process_time()
        out = self._fn()
        self.seconds.append(time.process_time() - t0)
        return out

    @property
    def median(self) -> float:
        """The median of the timed calls (the warm-up call left out when there was one)."""
        timed_calls = self.seconds[1:] if len(self.seconds) > 1 else self.seconds
        return statistics.median(timed_calls)


def _reported(agg: Aggregator, n: int, runs: int) -> float:
    """Median seconds of the snapshot when every one of the ``n`` components reported
    since the last read (one event each, folded untimed before each timed read): each
    is read afresh, where the repeated reads of ``snapshot_ms`` find nothing new and
    work out only what moves with the clock."""
    names = list(agg.figures().detailed_components)[:n]
    batch = [Event(name, "processed", latency=0.004) for name in names]
    times: list[float] = []
    for _ in range(runs + 1):  # the first is a warm-up
        agg.fold_events(batch)
        t0 = time.perf_counter()
        HealthJudge().judge(agg.figures())
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def _once(fn: Callable[[], T], runs: int) -> tuple[float, T]:
    """``timed``, or a single call without warm-up when ``runs`` is 1 (a slow reference)."""
    if runs > 1:
        return timed(fn, runs)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _runs(n: int) -> int:
    return 5 if n <= 1_000 else 3


#: From this many components on, quick mode times generate_latest once per format (a
#: second a call at 1,000, seconds at 10,000) and, from ``_QUICK_ONE_RUN``, everything
#: else in one run after the warm-up: the case stays near a minute.
_QUICK_REFERENCE_ONCE = 1_000
_QUICK_ONE_RUN = 10_000


def run_case(
    sizes: Sequence[int],
    *,
    events_per_component: int = 100,
    flat_factor: int = 10,
    flat_size: int | None = None,
    quick: bool = False,
) -> CaseResult:
    """``quick``: generate_latest (the reference, seconds per call at 10,000 components)
    is timed once per format from 1,000 components on, without warm-up, and the rest in
    one run (after a warm-up) at 10,000."""
    result = CaseResult(
        "scale",
        params={"sizes": list(sizes), "events_per_component": events_per_component},
    )
    eval_ms: dict[int, float] = {}
    for n in sizes:
        progress(f"scale: {n:,} components")
        agg = seeded_aggregator(n, events_per_component)
        runs = 1 if quick and n >= _QUICK_ONE_RUN else _runs(n)
        t_snap, snap = timed(lambda a=agg: HealthJudge().judge(a.figures()), runs)  # type: ignore[misc]
        t_reported = _reported(agg, n, runs)
        engine = AlertEngine()
        t_alert, _ = timed(lambda s=snap, e=engine: e.evaluate(s), runs)  # type: ignore[misc]
        full = HealthJudge(alerts=engine).judge(agg.figures())  # what a tick serves
        cpu_prom = _Cpu(lambda s=full: render_direct(s))  # type: ignore[misc]
        cpu_om = _Cpu(lambda s=full: render_direct(s, True))  # type: ignore[misc]
        t_prom, body = timed(cpu_prom, runs)
        t_om, om_body = timed(cpu_om, runs)
        warm = ExpositionWriter()
        t_warm, warm_body = timed(lambda s=full, w=warm: w.render(s), runs)  # type: ignore[misc]
        ref_runs = 1 if quick and n >= _QUICK_REFERENCE_ONCE else runs
        cpu_gl = _Cpu(lambda s=full: render_prometheus(s))  # type: ignore[misc]
        cpu_gl_om = _Cpu(lambda s=full: render_prometheus(s, True))  # type: ignore[misc]
        t_gl, ref = _once(cpu_gl, ref_runs)
        t_gl_om, ref_om = _once(cpu_gl_om, ref_runs)
        if not (body == ref == warm_body and om_body == ref_om):
            raise ValueError(f"{n:,} components: the direct writer differs from generate_latest")
        t_json, js = timed(lambda s=full: msgspec.json.encode(metrics_response(s)), runs)  # type: ignore[misc]
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        row: dict[str, Any] = {
            "components": n,
            "snapshot_ms": t_snap * 1e3,
            "snapshot_reported_ms": t_reported * 1e3,
            "alerts_ms": t_alert * 1e3,
            "tick_eval_ms": (t_snap + t_alert) * 1e3,
            "eval_us_per_comp": (t_snap + t_alert) / n * 1e6,
            "metrics_ms": t_prom * 1e3,
            "metrics_warm_ms": t_warm * 1e3,
            "gl_ms": t_gl * 1e3,
            "gl_x": t_gl / t_prom,
            "om_ms": t_om * 1e3,
            "gl_om_ms": t_gl_om * 1e3,
            "gl_om_x": t_gl_om / t_om,
            "metrics_cpu_ms": cpu_prom.median * 1e3,
            "gl_cpu_x": cpu_gl.median / cpu_prom.median,
            "gl_om_cpu_x": cpu_gl_om.median / cpu_om.median,
            "metrics_kb": len(body) / 1024,
            "series": series,
            "json_ms": t_json * 1e3,
            "json_kb": len(js) / 1024,
        }
        eval_ms[n] = row["tick_eval_ms"]
        result.rows.append(row)
        progress(
            f"scale: {n:,} components: snapshot {row['snapshot_ms']:.1f} ms, alerts "
            f"{row['alerts_ms']:.1f} ms, /metrics {row['metrics_ms']:.0f} ms cold, "
            f"{row['metrics_warm_ms']:.0f} ms warm (generate_latest {row['gl_ms']:.0f} ms, "
            f"x{row['gl_x']:.1f}), OpenMetrics {row['om_ms']:.0f} ms (x{row['gl_om_x']:.1f}) "
            f"({row['metrics_kb']:.0f} KB), /metrics/json {row['json_ms']:.1f} ms"
        )
    prev: dict[str, Any] | None = None
    for row in result.rows:  # how each figure grows against the previous size
        if prev is not None:
            k = row["components"] / prev["components"]
            for key in ("tick_eval_ms", "metrics_ms", "json_ms"):
                row[f"{key.split('_')[0]}_growth"] = row[key] / prev[key] / k
        prev = row
    n = flat_size if flat_size is not None else sorted(sizes)[min(1, len(sizes) - 1)]
    progress(f"scale: {n:,} components with {flat_factor}x the events")
    few = seeded_aggregator(n, events_per_component)
    many = seeded_aggregator(n, events_per_component * flat_factor)
    t_few, s_few, t_many, s_many = _interleaved(
        lambda: HealthJudge().judge(few.figures()),
        lambda: HealthJudge().judge(many.figures()),
        2 * _runs(n) + 1,
    )
    folded = (
        sum(c.items_processed + c.errors_encountered for c in s_few.detailed_components.values()),
        sum(c.items_processed + c.errors_encountered for c in s_many.detailed_components.values()),
    )
    result.params["flat_in_events"] = {
        "components": n,
        "events": list(folded),
        "snapshot_ms": [t_few * 1e3, t_many * 1e3],
        "ratio": t_many / t_few,
    }
    result.notes.append(
        f"flat in events: {n:,} components, {folded[0]:,} vs {folded[1]:,} events folded: "
        f"snapshot {t_few * 1e3:.2f} ms vs {t_many * 1e3:.2f} ms (x{t_many / t_few:.2f})"
    )
    result.notes.append(
        "growth columns: (time at this size / time at the previous size) / (size ratio); "
        "1.0 is linear in components"
    )
    result.notes.append(
        "metrics_ms / om_ms: the direct writer, cold (every block written, as when every "
        "component changed); metrics_warm_ms: every block reused; gl_*: generate_latest "
        "over the same snapshot (the reference; its bytes are checked identical); *_x: "
        "generate_latest / direct; *_cpu_*: the same in CPU time of this process"
        + (
            f"; quick mode: generate_latest timed once from {_QUICK_REFERENCE_ONCE:,} "
            f"components, the rest in one run from {_QUICK_ONE_RUN:,}"
            if quick
            else ""
        )
    )
    at = 1_000 if 1_000 in eval_ms else None
    big = next((r for r in result.rows if r["components"] == 10_000), None)
    missing = "10,000 not among the sizes"

    def at_10k(key: str, scale: float = 1.0) -> float | None:
        return big[key] * scale if big else None

    result.targets = [
        Target(
            "scale: alert+health evaluation per tick, 1,000 components",
            eval_ms.get(1_000) if at else None,
            "<",
            5.0,
            "ms",
            "figures() + HealthJudge.judge() + AlertEngine.evaluate()"
            if at
            else "1,000 not among the sizes",
        ),
        Target(
            "scale: /metrics build at 10,000 components",
            at_10k("metrics_ms"),
            "<",
            300.0,
            "ms",
            f"direct writer, cold (every block written); {big['metrics_cpu_ms']:.0f} ms of CPU"
            if big
            else missing,
        ),
        Target(
            "scale: /metrics build / generate_latest at 10,000 components",
            at_10k("gl_x"),
            ">=",
            10.0,
            "x",
            f"same snapshot, same run; in CPU time x{big['gl_cpu_x']:.1f}" if big else missing,
        ),
        Target(
            "scale: OpenMetrics build at 10,000 components",
            at_10k("om_ms"),
            "<",
            300.0,
            "ms",
            "direct writer, cold" if big else missing,
        ),
        Target(
            "scale: OpenMetrics build / generate_latest at 10,000 components",
            at_10k("gl_om_x"),
            ">=",
            10.0,
            "x",
            f"same snapshot, same run; in CPU time x{big['gl_om_cpu_x']:.1f}" if big else missing,
        ),
        Target(
            "scale: /metrics/json at 10,000 components",
            at_10k("json_ms"),
            "<",
            50.0,
            "ms",
            "metrics_response encoded by msgspec" if big else missing,
        ),
    ]
    return result
