"""Ingest: one deterministic stream folded by streammetrics and by what a user would pick
instead, each checked to end with the same totals.

    python -m benchmarks --case ingest [--events N] [--components N] [--error-ratio R]
    python -m benchmarks.ingest ...          (the same, this case alone)

Contenders, each folding every event of the same seeded stream:

- ``probe``: streammetrics' hot path, ``Probe.processed/error`` per event and
  ``EventBus.flush()`` into an ``Aggregator`` every ``flush_every`` events;
- ``msgpack``: streammetrics from MessagePack batches (``decode_events`` +
  ``Aggregator.fold_events``), as an external producer would send them, and the
  ``Aggregator.settle()`` of the latencies still held for bucketing at the end;
- ``prometheus-client``: a labelled ``Counter`` (processed, errors) and ``Histogram``
  (latency, default buckets) per event, labels looked up on every call, own registry;
- ``opentelemetry-sdk``: a counter per kind and a histogram per event (default
  explicit-bucket aggregation), attributes per component, read by an in-memory reader;
- ``msgspec``: bare ``msgspec.msgpack.Decoder(list[Event])`` of the same batches, the
  floor of the MessagePack path (decode only: its totals are counted in a second,
  untimed pass).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from streammetrics.aggregator import Aggregator
from streammetrics.bus import EventBus
from streammetrics.model.events import Event, decode_events

from ._report import BenchmarkError, CaseResult, Target, progress, table, targets_table
from .stream import Stream, StreamSpec, parse_latency

__all__ = (
    "COLUMNS",
    "PEERS",
    "PeerRun",
    "ProbePath",
    "check_totals",
    "chunks",
    "main",
    "run_case",
)

Totals = dict[str, tuple[int, int]]


@dataclass
class PeerRun:
    seconds: float
    cpu_seconds: float
    totals: Totals


def chunks(stream: Stream, size: int) -> Iterator[tuple[int, int]]:
    """``(j0, j1)`` index ranges into the block, at most ``size`` long, that together
    walk ``spec.events`` events of the stream in order."""
    left = stream.spec.events
    j = 0
    n = stream.block
    while left:
        k = min(size, n - j, left)
        yield j, j + k
        left -= k
        j = (j + k) % n


def _aggregator_totals(agg: Aggregator) -> Totals:
    snap = agg.figures()
    return {
        name: (c.items_processed, c.errors_encountered)
        for name, c in snap.detailed_components.items()
        if c.items_processed or c.errors_encountered
    }


class ProbePath:
    """streammetrics' hot path over one stream: a probe per component, counting into an
    ``EventBus`` whose flush folds into an ``Aggregator`` (the ``probe`` peer here, and
    what ``memory`` pours its events through)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.bus = EventBus()
        self.agg = Aggregator()
        self.bus.subscribe(self.agg)
        self.probes = [self.bus.probe(n) for n in stream.names]
        self._proc = [p.processed for p in self.probes]
        self._err = [p.error for p in self.probes]

    def fold(self, j0: int, j1: int) -> None:
        """Events ``j0`` to ``j1`` of the block, each through its component's probe, then
        one flush."""
        proc, err = self._proc, self._err
        s = self.stream
        for c, e, lat in zip(s.comp[j0:j1], s.err[j0:j1], s.lat[j0:j1], strict=True):
            if e:
                err[c](latency=lat)
            else:
                proc[c](latency=lat)
        self.bus.flush()


def peer_probe(stream: Stream, flush_every: int = 10_000) -> PeerRun:
    path = ProbePath(stream)
    fold = path.fold
    c0, t0 = time.process_time(), time.perf_counter()
    for j0, j1 in chunks(stream, flush_every):
        fold(j0, j1)
    t1, c1 = time.perf_counter(), time.process_time()
    return PeerRun(t1 - t0, c1 - c0, _aggregator_totals(path.agg))


def peer_msgpack(stream: Stream) -> PeerRun:
    plan = list(stream.batch_plan(stream.batches("msgpack")))
    agg = Aggregator()
    rejected = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for data in plan:
        d = decode_events(data, "msgpack")
        rejected += len(d.rejected) + len(agg.fold_events(d.events))
    agg.settle()  # the latencies still held for bucketing: work the folds owe, timed too
    t1, c1 = time.perf_counter(), time.process_time()
    if rejected:
        raise BenchmarkError(f"msgpack: {rejected} events rejected")
    return PeerRun(t1 - t0, c1 - c0, _aggregator_totals(agg))


def peer_msgspec(stream: Stream) -> PeerRun:
    plan = list(stream.batch_plan(stream.batches("msgpack")))
    dec = msgspec.msgpack.Decoder(list[Event])
    decode = dec.decode
    c0, t0 = time.process_time(), time.perf_counter()
    for data in plan:
        decode(data)
    t1, c1 = time.perf_counter(), time.process_time()
    counts: dict[str, list[int]] = {}
    for data in plan:  # untimed: what the timed pass decoded, counted
        for ev in decode(data):
            pe = counts.setdefault(ev.component, [0, 0])
            pe[ev.kind == "error"] += ev.count
    return PeerRun(t1 - t0, c1 - c0, {k: (p, e) for k, (p, e) in counts.items()})


def peer_prometheus(stream: Stream, chunk: int = 10_000) -> PeerRun:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    items = Counter("items_processed", "Items processed", ["component"], registry=reg)
    errors = Counter("errors", "Errors", ["component"], registry=reg)
    latency = Histogram("latency_seconds", "Latency", ["component"], registry=reg)
    names = stream.names
    comp, errs, lats = stream.comp, stream.err, stream.lat
    c0, t0 = time.process_time(), time.perf_counter()
    for j0, j1 in chunks(stream, chunk):
        for c, e, lat in zip(comp[j0:j1], errs[j0:j1], lats[j0:j1], strict=True):
            name = names[c]
            if e:
                errors.labels(name).inc()
            else:
                items.labels(name).inc()
            latency.labels(name).observe(lat)
    t1, c1 = time.perf_counter(), time.process_time()
    counts: dict[str, list[int]] = {}
    for metric in reg.collect():
        for s in metric.samples:
            if s.name in ("items_processed_total", "errors_total"):
                pe = counts.setdefault(s.labels["component"], [0, 0])
                pe[s.name == "errors_total"] += int(s.value)
    return PeerRun(t1 - t0, c1 - c0, {k: (p, e) for k, (p, e) in counts.items()})


def otel_available() -> bool:
    try:
        import opentelemetry.sdk.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def peer_otel(stream: Stream, chunk: int = 10_000) -> PeerRun:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        meter = provider.get_meter("streammetrics.benchmarks")
        items = meter.create_counter("items_processed")
        errors = meter.create_counter("errors")
        latency = meter.create_histogram("latency", unit="s")
        attrs = [{"component": n} for n in stream.names]
        comp, errs, lats = stream.comp, stream.err, stream.lat
        c0, t0 = time.process_time(), time.perf_counter()
        for j0, j1 in chunks(stream, chunk):
            for c, e, lat in zip(comp[j0:j1], errs[j0:j1], lats[j0:j1], strict=True):
                a = attrs[c]
                if e:
                    errors.add(1, a)
                else:
                    items.add(1, a)
                latency.record(lat, a)
        t1, c1 = time.perf_counter(), time.process_time()
        counts: dict[str, list[int]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name not in ("items_processed", "errors"):
                        continue
                    for dp in m.data.data_points:
                        labels = dp.attributes or {}
                        pe = counts.setdefault(str(labels["component"]), [0, 0])
                        pe[m.name == "errors"] += int(dp.value)  # type: ignore[union-attr]
    finally:
        provider.shutdown()
    return PeerRun(t1 - t0, c1 - c0, {k: (p, e) for k, (p, e) in counts.items()})


#: name -> (what it is, the function that runs it)
PEERS: dict[str, tuple[str, Callable[[Stream], PeerRun]]] = {
    "probe": ("streammetrics: Probe + EventBus.flush -> Aggregator", peer_probe),
    "msgpack": ("streammetrics: decode_events(msgpack) + fold_events", peer_msgpack),
    "prometheus-client": ("prometheus-client: labelled Counter + Histogram", peer_prometheus),
    "opentelemetry-sdk": ("OpenTelemetry SDK: Counter + Histogram, attributes", peer_otel),
    "msgspec": ("floor: bare msgspec.msgpack decode of the same batches", peer_msgspec),
}


def check_totals(peer: str, got: Totals, expected: Totals) -> None:
    """Raise ``BenchmarkError`` unless ``got`` matches ``expected`` for every component."""
    if got == expected:
        return
    diffs = []
    for name in sorted(set(got) | set(expected)):
        g, x = got.get(name, (0, 0)), expected.get(name, (0, 0))
        if g != x:
            diffs.append(f"{name}: (processed, errors) {g} != expected {x}")
    sp = sum(p for p, _ in got.values()), sum(e for _, e in got.values())
    sx = sum(p for p, _ in expected.values()), sum(e for _, e in expected.values())
    raise BenchmarkError(
        f"ingest: {peer} ended with totals {sp} (processed, errors), expected {sx}; "
        f"it skipped or invented work, so its figure would be a lie:\n  " + "\n  ".join(diffs[:10])
    )


def measure(
    name: str,
    fn: Callable[[Stream], PeerRun],
    stream: Stream,
    expected: Totals,
    *,
    min_seconds: float,
    max_runs: int,
) -> list[PeerRun]:
    """Run ``fn`` until ``min_seconds`` were spent (at least once, at most ``max_runs``
    times), checking the totals of every run."""
    runs: list[PeerRun] = []
    spent = 0.0
    while len(runs) < max_runs and (not runs or spent < min_seconds):
        gc.collect()
        r = fn(stream)
        check_totals(name, r.totals, expected)
        runs.append(r)
        spent += r.seconds
    return runs


def summarize(name: str, runs: list[PeerRun], events: int) -> dict[str, Any]:
    """The row of one contender: its median run, and how far apart its runs were."""
    mid = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    fastest, slowest = min(r.seconds for r in runs), max(r.seconds for r in runs)
    cpu = sorted(r.cpu_seconds for r in runs)[len(runs) // 2]
    return {
        "contender": name,
        "events": events,
        "runs": len(runs),
        "seconds": mid.seconds,
        "events_per_s": events / mid.seconds,
        "cpu_us_per_event": cpu / events * 1e6,
        # what one CPU does: steadier than wall time when other processes share the CPUs
        "events_per_cpu_s": events / cpu if cpu > 0 else None,
        "spread_pct": (slowest - fastest) / mid.seconds * 100 if len(runs) > 1 else None,
    }


def run_case(
    spec: StreamSpec,
    *,
    peers: tuple[str, ...] = tuple(PEERS),
    rounds: int = 3,
    min_round_seconds: float = 0.3,
) -> CaseResult:
    """Fold the stream of ``spec`` with each peer; rows, ratios and targets.

    Contenders take turns: each round runs every contender (a fast one again until it
    has run ``min_round_seconds`` in that round), so a busy spell of the machine hits
    them all alike; a row is the median of all of a contender's runs.
    """
    stream = Stream(spec)
    expected = stream.expected()
    result = CaseResult(
        "ingest",
        params={
            "events": spec.events,
            "components": spec.components,
            "error_ratio": spec.error_ratio,
            "latency": spec.latency.describe(),
            "seed": spec.seed,
            "batch": spec.batch,
            "rounds": rounds,
            "expected_processed": sum(p for p, _ in expected.values()),
            "expected_errors": sum(e for _, e in expected.values()),
        },
    )
    active = []
    for name in peers:
        if name == "opentelemetry-sdk" and not otel_available():
            result.notes.append(
                "opentelemetry-sdk is not installed (pip install -e '.[bench]'): peer skipped"
            )
            progress("ingest: opentelemetry-sdk not installed, skipped")
        else:
            active.append(name)
    runs: dict[str, list[PeerRun]] = {name: [] for name in active}
    for k in range(rounds):
        for name in active:
            got = measure(
                name,
                PEERS[name][1],
                stream,
                expected,
                min_seconds=min_round_seconds,
                max_runs=50,
            )
            runs[name] += got
            rate = spec.events * len(got) / sum(r.seconds for r in got)
            progress(
                f"ingest round {k + 1}/{rounds}: {name}: {rate / 1e6:.3f} M events/s "
                f"({len(got)} run{'s' * (len(got) > 1)} of {spec.events:,} events, totals ok)"
            )
    by_name: dict[str, dict[str, Any]] = {}
    for name in active:
        row = summarize(name, runs[name], spec.events)
        row["what"] = PEERS[name][0]
        row["totals_ok"] = True
        by_name[name] = row
        result.rows.append(row)
    for row in result.rows:
        for ours in ("probe", "msgpack"):
            if ours in by_name:
                row[f"{ours}_x"] = by_name[ours]["events_per_s"] / row["events_per_s"]
    eps = {k: v["events_per_s"] for k, v in by_name.items()}
    cps = {k: v["events_per_cpu_s"] for k, v in by_name.items() if v["events_per_cpu_s"]}

    def ratio(a: str, b: str, of: dict[str, float] = eps) -> float | None:
        return of[a] / of[b] if a in of and b in of else None

    def by_cpu(a: str, b: str | None = None) -> str:
        """The same figure from CPU time, for a machine shared with other processes."""
        if b is None:
            return f"{cps[a] / 1e6:.2f} M events per CPU-second" if a in cps else ""
        r = ratio(a, b, cps)
        return f"{r:.3g} x by CPU time" if r is not None else "peer not measured"

    result.targets = [
        Target("ingest: probe path", eps.get("probe"), ">=", 3e6, "events/s", by_cpu("probe")),
        Target(
            "ingest: probe / prometheus-client",
            ratio("probe", "prometheus-client"),
            ">=",
            10.0,
            "x",
            by_cpu("probe", "prometheus-client"),
        ),
        Target(
            "ingest: probe / opentelemetry-sdk",
            ratio("probe", "opentelemetry-sdk"),
            ">=",
            40.0,
            "x",
            by_cpu("probe", "opentelemetry-sdk"),
        ),
        Target(
            "ingest: msgpack path / bare msgspec decode",
            ratio("msgpack", "msgspec"),
            ">=",
            0.40,
            "x",
            by_cpu("msgpack", "msgspec"),
        ),
    ]
    if "msgpack" in cps and "msgspec" in cps:
        # msgspec decodes what the msgpack path decodes: the rest of that path is the fold
        decode_us = 1e6 / cps["msgspec"]
        path_us = 1e6 / cps["msgpack"]
        result.notes.append(
            f"msgpack path by CPU time: {path_us:.3f} µs per event, of which decoding "
            f"{decode_us:.3f} µs (the msgspec floor) and folding (decode_events' checks, "
            f"fold_events) {path_us - decode_us:.3f} µs, {(path_us - decode_us) / decode_us:.2f} "
            "x the decoding"
        )
    result.notes.append(
        "all contenders ended with the same per-component (processed, errors) totals: "
        f"{result.params['expected_processed']:,} processed, "
        f"{result.params['expected_errors']:,} errors"
    )
    return result


COLUMNS = (
    "contender",
    "events",
    "runs",
    "events_per_s",
    "events_per_cpu_s",
    "cpu_us_per_event",
    "probe_x",
    "msgpack_x",
)


def add_stream_args(ap: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    ap.add_argument("--events", type=int, default=None, help="events in the stream")
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--error-ratio", type=float, default=0.01)
    ap.add_argument(
        "--latency",
        type=parse_latency,
        default="lognormal:5:1",
        help="lognormal:MEDIAN_MS:SIGMA | exponential:MEAN_MS | uniform:LO_MS:HI_MS | constant:MS",
    )
    ap.add_argument("--seed", type=int, default=1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="ingest benchmark: streammetrics beside its peers")
    add_stream_args(ap)
    args = ap.parse_args(argv)
    spec = StreamSpec(
        events=args.events or 1_000_000,
        components=args.components,
        error_ratio=args.error_ratio,
        latency=args.latency,
        seed=args.seed,
    )
    r = run_case(spec)
    print(table(r.rows, COLUMNS))
    print()
    print(targets_table(r.targets))


if __name__ == "__main__":
    main()
