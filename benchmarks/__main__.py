"""``python -m benchmarks``: every case (or ``--case``), a table each, targets beside
the figures, and ``benchmarks/results/latest.json``.

    python -m benchmarks --quick                 # < 3 min on 2 cores
    python -m benchmarks                         # full mode
    python -m benchmarks --case ingest --events 2000000 --components 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import churn, footprint, ingest, memory, otlp, overload, scale, serving
from ._report import BenchmarkError, CaseResult, machine, progress, table, targets_table
from .stream import StreamSpec

__all__ = ("CASES", "main")

CASES = ("ingest", "http", "scale", "footprint", "memory", "otlp", "churn", "overload")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "ingest": ingest.COLUMNS,
    "http": (
        "route",
        "server",
        "conns",
        "req_per_s",
        "vs_peer",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "errors",
        "timeouts",
        "non2xx",
        "renders",
        "render_s",
        "metrics_mb",
        "gc_full",
        "gc_max_ms",
    ),
    "scale": None,
    "memory": None,
    "otlp": otlp.COLUMNS,
    "churn": None,
    "footprint": None,
    "overload": None,
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="streammetrics beside its peers, measured in one run on one machine",
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs (< 3 min)")
    ap.add_argument(
        "--case", action="append", choices=CASES, help="run only this case (repeatable)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the JSON results go")
    g = ap.add_argument_group("ingest")
    ingest.add_stream_args(g)
    h = ap.add_argument_group("http")
    h.add_argument("--seconds", type=float, default=None, help="seconds per load run")
    h.add_argument(
        "--connections",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=None,
        help="comma-separated connection counts (default 10,100,500)",
    )
    h.add_argument("--http-components", type=int, default=100)
    h.add_argument("--load", choices=("wrk", "asyncio"), default=None, help="force a generator")
    h.add_argument(
        "--rate",
        type=float,
        default=1_000.0,
        help="also /health at this many requests/s offered, open loop (0: skip)",
    )
    return ap


def _plan(args: argparse.Namespace) -> dict[str, Callable[[], CaseResult]]:
    q = args.quick
    spec = StreamSpec(
        events=args.events or (300_000 if q else 2_000_000),
        components=args.components,
        error_ratio=args.error_ratio,
        latency=args.latency,
        seed=args.seed,
    )
    return {
        "ingest": lambda: ingest.run_case(spec, rounds=3, min_round_seconds=0.3 if q else 1.0),
        "http": lambda: serving.run_case(
            connections=args.connections or (10, 100, 500),
            seconds=args.seconds or (2.0 if q else 10.0),
            components=args.http_components,
            render_seconds=4.0 if q else 10.0,
            tool=args.load,
            fixed_rate=args.rate or None,
        ),
        "scale": lambda: scale.run_case((100, 1_000, 10_000), quick=q),
        "footprint": lambda: footprint.run_case(10_000, quick=q),
        "memory": lambda: memory.run_case(
            (1_000_000, 5_000_000) if q else (1_000_000, 10_000_000, 50_000_000),
            components=args.components,
        ),
        "otlp": lambda: otlp.run_case(
            spans=30_000 if q else 200_000,
            rounds=3,
            min_round_seconds=0.2 if q else 1.0,
            http_repeat=2 if q else 3,
        ),
        "churn": lambda: (
            churn.run_case(100_000, ttl_s=1.0, retention_s=2.0, again=0.1)
            if q
            else churn.run_case(100_000, ttl_s=5.0, retention_s=10.0)
        ),
        "overload": lambda: overload.run_case(seconds=2.0 if q else 10.0),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cases = args.case or list(CASES)
    mode = "quick" if args.quick else "full"
    info = machine()
    print(
        f"# streammetrics benchmarks ({mode}): {info['nproc']} CPUs, {info['cpu']}, "
        f"Python {info['python']}, load average {info['loadavg'][0]:.2f} at start\n"
    )
    plan = _plan(args)
    doc: dict[str, Any] = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "cases": {},
        "failed": {},
    }
    results: list[CaseResult] = []
    t0 = time.perf_counter()
    for name in cases:
        progress(f"case {name} ...")
        c0 = time.perf_counter()
        try:
            r = plan[name]()
        except BenchmarkError as exc:
            print(f"## {name}: FAILED\n\n{exc}\n", flush=True)
            progress(f"case {name} FAILED: {str(exc).splitlines()[0]}")
            doc["failed"][name] = str(exc)
            continue
        r.params["case_seconds"] = time.perf_counter() - c0
        results.append(r)
        doc["cases"][name] = r.as_dict()
        print(f"## {name}\n")
        for k, v in r.params.items():
            print(f"- {k}: {v}")
        print()
        print(table(r.rows, _COLUMNS[name]))
        for note in r.notes:
            print(f"\n> {note}")
        print(flush=True)
    targets = [t for r in results for t in r.targets]
    doc["targets"] = [t.as_dict() for t in targets]
    doc["seconds"] = time.perf_counter() - t0
    doc["loadavg_end"] = list(os.getloadavg())
    busy = max(info["loadavg"][0], doc["loadavg_end"][0]) > 0.5 * (info["nproc"] or 1)
    if busy:
        print(
            f"> the machine was busy (load average {info['loadavg'][0]:.2f} at start, "
            f"{doc['loadavg_end'][0]:.2f} at the end, {info['nproc']} CPUs): "
            "other processes shared the CPUs, so absolute figures are low and noisy; "
            "ratios measured in the same run are fairer\n"
        )
    print("## targets\n")
    print(targets_table(targets))
    print(
        f"\n{len(targets)} targets: {sum(t.verdict == 'met' for t in targets)} met, "
        f"{sum(t.verdict == 'MISSED' for t in targets)} missed, "
        f"{sum(t.verdict == 'n/a' for t in targets)} not measured; "
        f"{doc['seconds']:.0f} s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
