"""What a ``Probe`` costs the code it instruments, per call.

    python -m benchmarks.probe_overhead            # ~10 s
    python -m benchmarks.probe_overhead --quick

Each figure is the median of several ``timeit`` runs, less the same loop calling an
uninstrumented function, so it is the probe's own cost in nanoseconds. "nobody listens"
is the probe of a bus without a sink (no endpoint runs: timing is off, counts are kept);
"endpoint listening" is a probe of a running MetricsEndpoint (latencies measured; its
flush runs on the endpoint's tick, off the instrumented path).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import timeit
from collections.abc import Callable, Coroutine
from typing import Any

from ._report import machine, table

__all__ = ("main", "measure")


def _ns_per_call(stmt: Callable[[], Any], number: int, repeat: int) -> float:
    runs = timeit.repeat(stmt, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e9


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine suspended")


def measure(number: int, repeat: int) -> list[dict[str, Any]]:
    from streammetrics import Probe
    from streammetrics.bus import EventBus

    def work() -> int:
        return 1

    async def awork() -> int:
        return 1

    def rows_for(probe: Probe, who: str) -> list[dict[str, Any]]:
        timed_work = probe.timed(work)
        timed_awork = probe.timed(awork)

        def in_block() -> int:
            with probe.time():
                return work()

        base = _ns_per_call(work, number, repeat)
        # A coroutine that never suspends can be driven without a loop: what remains is
        # the wrapper's own cost, not the event loop's.
        coro_base = _ns_per_call(lambda: _drive(awork()), number, repeat)
        coro_timed = _ns_per_call(lambda: _drive(timed_awork()), number, repeat)
        cases = [
            ("processed()", _ns_per_call(probe.processed, number, repeat) - base),
            (
                "processed(latency=)",
                _ns_per_call(lambda: probe.processed(latency=0.0012), number, repeat) - base,
            ),
            (
                "error(detail=)",
                _ns_per_call(lambda: probe.error(detail="x"), number, repeat) - base,
            ),
            ("with probe.time()", _ns_per_call(in_block, number, repeat) - base),
            ("@probe.timed def", _ns_per_call(timed_work, number, repeat) - base),
            ("@probe.timed async def", coro_timed - coro_base),
        ]
        probe.flush()
        return [
            {"probe": who, "call": name, "overhead_ns": max(ns, 0.0), "vs_1us_work": ns / 1000}
            for name, ns in cases
        ]

    rows = rows_for(EventBus().probe("nobody_listens"), "nobody listens")

    async def listening() -> list[dict[str, Any]]:
        import streammetrics

        async with streammetrics.serve(name="bench", port=0, tick_s=1.0) as ep:
            # The measurement blocks the loop, so the flusher runs between the cases only:
            # exactly the endpoint's situation, its work is never on the probe's path.
            return rows_for(ep.probe("listened"), "endpoint listening")

    rows += asyncio.run(listening())
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations (noisier)")
    args = p.parse_args(argv)
    number, repeat = (100_000, 3) if args.quick else (400_000, 7)
    m = machine()
    print(f"# probe overhead ({m['cpu']}, {m['nproc']} cpus, Python {m['python']})")
    print(f"# {number:,} calls x {repeat} runs each; medians, baseline loop subtracted\n")
    rows = measure(number, repeat)
    print(table(rows, ("probe", "call", "overhead_ns", "vs_1us_work")))
    print(
        "\nvs_1us_work: the overhead as a fraction of a function that itself takes 1 µs "
        "(0.1 = 10 %)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
