"""Memory: resident set size while events pour through the probe path; it must stay flat.

State is bounded by design (one rolling window per component, a fixed ring of slots), so
RSS after 50 M events should equal RSS after 1 M. Checkpoints are cumulative within one
run: the same aggregator folds the whole stream, and RSS is read (after a full garbage
collection) each time the count passes a checkpoint.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import psutil

from ._report import BenchmarkError, CaseResult, Target, progress
from .ingest import ProbePath
from .stream import Stream, StreamSpec

__all__ = ("rss_mb", "run_case")


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def run_case(
    checkpoints: Sequence[int],
    *,
    components: int = 10,
    error_ratio: float = 0.01,
    flush_every: int = 10_000,
    seed: int = 1,
    target_events: int = 50_000_000,
) -> CaseResult:
    """RSS at each checkpoint (events folded so far) through the probe path."""
    marks = sorted(set(checkpoints))
    if not marks or marks[0] < 1:
        raise ValueError("checkpoints must be positive event counts")
    stream = Stream(
        StreamSpec(events=marks[-1], components=components, error_ratio=error_ratio, seed=seed)
    )
    path = ProbePath(stream)
    agg = path.agg
    # Warm up: every probe, window and histogram exists before the baseline is read.
    for p in path.probes:
        p.processed(latency=0.001)
        p.error(latency=0.001)
    path.bus.flush()
    agg.figures()
    gc.collect()
    base = rss_mb()
    result = CaseResult(
        "memory",
        params={"checkpoints": marks, "components": components, "baseline_rss_mb": base},
    )
    done = 0
    pending = list(marks)
    t0 = time.perf_counter()
    n = stream.block
    j = 0
    while pending:
        # up to flush_every events, never past the block's end nor the next checkpoint
        k = min(flush_every, n - j, pending[0] - done)
        j1 = j + k
        path.fold(j, j1)
        done += k
        j = j1 % n
        if done == pending[0]:
            pending.pop(0)
            agg.figures()  # a reader's view too: reading must not grow state either
            gc.collect()
            rss = rss_mb()
            result.rows.append(
                {
                    "events": done,
                    "rss_mb": rss,
                    "growth_mb": rss - base,
                    "seconds": time.perf_counter() - t0,
                }
            )
            progress(f"memory: {done:,} events, RSS {rss:.1f} MB ({rss - base:+.2f} MB)")
    snap = agg.figures()
    total = sum(c.items_processed + c.errors_encountered for c in snap.detailed_components.values())
    want = marks[-1] + 2 * components
    if total != want:
        raise BenchmarkError(f"memory: aggregator counted {total:,} events, expected {want:,}")
    last = result.rows[-1]
    note = "" if last["events"] >= target_events else f"over {last['events']:,} events (quick)"
    result.targets = [
        Target(
            f"memory: RSS growth over {last['events'] / 1e6:g} M events",
            last["growth_mb"],
            "<",
            5.0,
            "MB",
            note,
        )
    ]
    return result
