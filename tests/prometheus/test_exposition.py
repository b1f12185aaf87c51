"""The direct writer (``prometheus/exposition.py``) against the reference: prometheus-client's
``generate_latest`` over ``SnapshotCollector`` and the same other collectors. Both outputs
are parsed with prometheus-client's parsers and compared family by family, sample by
sample; and, since the writer is byte-identical by design, byte by byte too."""

from __future__ import annotations

import gc
import math
import random
import subprocess
import time
from collections.abc import Iterator, Sequence
from time import perf_counter
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streammetrics.http.app import create_app
from streammetrics.prometheus.collector import SnapshotCollector
from streammetrics.prometheus.exposition import (
    _SHARE_CAP_S,
    RENDER_STEP_S,
    Exposition,
    ExpositionWriter,
    _Pace,
    go_float,
)
from streammetrics.snapshot import (
    Alert,
    BreakerStatus,
    ComponentCounts,
    ComponentStatus,
    Latency,
    Performance,
    Snapshot,
    Streaming,
    StreamStatus,
    Traces,
)
from streammetrics.steps import Steps
from streammetrics.windows import LATENCY_BOUNDS, N_BUCKETS, WindowStats
from tests.support.exposition import OPENMETRICS
from tests.support.http_app import FakeClock, running, seed, service_for
from tests.support.tools import need

NAN = float("nan")
INF = float("inf")
#: Names with every character the exposition escapes, and some it does not need to.
ODD = ('q"uote', "back\\slash", "new\nline", "ünïcødé ✓", 'all"\\\n"\\', "plain", "")


def _window(view: int, ips: float, erate: float) -> WindowStats:
    return WindowStats(view, float(view), 10, 1, 0, 0, 5, 0.5, ips, 0.0, erate, 0.1, 0.2, 0.3)


def _component(i: int, *, latency: bool, spans: bool, windows: Sequence[int]) -> ComponentStatus:
    values = (0.0, 1.5, NAN, INF, -INF, 1e-7, 123456789.125, -0.0, 2.5e22)
    v = values[i % len(values)]
    lat = Latency(0.001 * (i + 1), v, 0.5, 3) if latency else Latency(None, None, None, 0)
    span = Latency(0.25, None, v, 2) if spans else None
    return ComponentStatus(
        is_healthy=i % 2 == 0,
        items_processed=[0, 7, 999_999, 1_000_000, 12_345_678_901, 2**70][i % 6],
        errors_encountered=i,
        client_errors=i % 3,
        status="running",
        last_activity=None,
        type="T",
        health=v if i % 3 else 0.75,
        items_per_second=1.0,
        error_rate=0.0,
        latency=lat,
        last_error=None,
        windows={f"{w}s": _window(w, v * w if i % 4 else 3.0, 0.01 * i) for w in windows},
        span_latency=span,
    )


def _snapshot(n: int = 24, *, window_seconds: int = 60, process: bool = True) -> Snapshot:
    """Many shapes: with and without latency, spans, windows, breakers, histograms; streams
    with and without buffers; rejected reasons and alerts; odd names; NaN and infinities."""
    names = [f"{ODD[i % len(ODD)]}#{i}" for i in range(n)]
    comps = {
        name: _component(i, latency=i % 3 != 1, spans=i % 4 == 0, windows=(10, 60, 300)[: i % 4])
        for i, name in enumerate(names)
    }
    hists: dict[str, list[int]] = {}
    sums: dict[str, float] = {}
    for i, name in enumerate(reversed(names)):  # another order than the components'
        counts = [0] * N_BUCKETS
        if i % 5:  # every fifth never timed: all zeros, no series
            for k in range(i % 7 + 1):
                counts[(i * 7 + k * 5) % N_BUCKETS] += k + i * 100_000
            sums[name] = [0.5, INF, 1e-3, 1234567.0][i % 4]  # NaN: not in counter-likes
        hists[name] = counts
    breakers = {
        names[i]: BreakerStatus(("closed", "open", "half_open")[i % 3], i, None, 0.0, i)
        for i in range(0, n, 3)
    }
    streams = {
        f"{ODD[i % len(ODD)]}->{i}": StreamStatus(
            total_messages=i * 1_000_003,
            message_rate=[0.0, NAN, 2.5][i % 3],
            from_component=None,
            to_component=None,
            stream_name=None,
            buffer_used=None if i % 2 else i,
            buffer_size=None if i % 3 else 100,
        )
        for i in range(n // 2)
    }
    alerts = [
        Alert("critical", "m", None, 0.0),
        Alert("warning", "m", "x", 0.0, state="firing"),
        Alert("warning", "m", "x", 0.0, state="pending"),
    ]
    lat = Latency(0.1, 0.2, 0.3, 9)
    perf = Performance(NAN, 12.5 if process else None, 3.0 if process else None, 1.0, INF, lat, 60)
    perf = msgspec.structs.replace(perf, window_seconds=window_seconds)
    return Snapshot(
        timestamp=1.0,
        uptime_seconds=12.25,
        health_score=0.5,
        system_status="degraded",
        components=ComponentCounts(n, n // 2, n),
        detailed_components=comps,
        circuit_breakers=breakers,
        streaming=Streaming(len(streams), 5, 1.0, streams),
        performance=perf,
        traces=Traces(3, 1, 2, 4),
        alerts=alerts,
        recommendations=[],
        reasons=[],
        rejected={"cardinality": 4, 'we"ird\n': 2},
        errors=["collector 'x' failed"],
        total_histogram=[0] * N_BUCKETS,
        component_histograms=hists,
        latency_sums=sums,
    )


class Users(Collector):
    """User families of every type, labelled, with units and created timestamps."""

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily("orders", 'Orders "placed"\nby\\kind', labels=["kind"])
        c.add_metric(['"a"\n'], 3, created=1_700_000_000.5)
        c.add_metric(["b"], INF)
        yield c
        g = GaugeMetricFamily("queue_depth", "Depth", labels=["q"], unit="items")
        g.add_metric(["x"], -INF)
        yield g
        h = HistogramMetricFamily("req", "Requests", labels=["path"], unit="seconds")
        h.add_metric(["/a\\b"], [("0.1", 1), ("1.0", 3), ("+Inf", 4)], 2.5)
        h.add_metric(["/c"], [("0.1", 0), ("+Inf", 2)], 9.0)
        yield h
        s = SummaryMetricFamily("size", "Sizes", labels=["t"])
        s.add_metric(["u"], count_value=4, sum_value=10.5)
        yield s
        yield InfoMetricFamily("build", "Build", value={"version": '1"2', "commit": "ab\n"})
        st = StateSetMetricFamily("mode", "Mode", labels=["unit"])
        st.add_metric(["u1"], {"on": True, "off": False})
        yield st
        gh = GaugeHistogramMetricFamily("inflight", "In flight", labels=["pool"])
        gh.add_metric(["p"], [("1.0", 2), ("+Inf", 5)], gsum_value=3.0)
        yield gh


def _extra() -> CollectorRegistry:
    """Other collectors, as TickCache's registry holds them: user ones and metric objects."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Users())
    ctr = Counter("jobs", "Jobs", ["queue"], registry=reg)
    ctr.labels("a").inc(2)
    Gauge("temp", "Temperature", registry=reg).set(21.5)
    Histogram("lat", "Latency", ["op"], buckets=(0.5, 2.0), registry=reg).labels("r").observe(1)
    Summary("payload", "Payload", registry=reg).observe(7)
    Info("app", "App", registry=reg).info({"name": "x"})
    Enum("phase", "Phase", states=["a", "b"], registry=reg).state("b")
    return reg


def _reference(
    snap: Snapshot,
    extra: CollectorRegistry | None,
    openmetrics: bool,
    buckets: Sequence[float] = LATENCY_BOUNDS,
) -> bytes:
    """What ``/metrics`` served before the writer: one registry, prometheus-client's text."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: snap, buckets))
    if extra is not None:
        reg.register(extra)
    out: bytes = om_generate_latest(reg) if openmetrics else generate_latest(reg)  # type: ignore[no-untyped-call]
    return out


def _same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or (
        x == y and math.copysign(1, x) == math.copysign(1, y)
    )


def assert_same_meaning(direct: bytes, reference: bytes, openmetrics: bool) -> None:
    """Family by family and sample by sample: names, labels, values (NaN equal to NaN),
    types, help and units, in the same order."""
    parse = parse_openmetrics if openmetrics else parse_text
    ours = list(parse(direct.decode()))
    theirs = list(parse(reference.decode()))
    assert [f.name for f in ours] == [f.name for f in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert (a.name, a.type, a.documentation, a.unit) == (
            b.name,
            b.type,
            b.documentation,
            b.unit,
        )
        assert len(a.samples) == len(b.samples), a.name
        for sa, sb in zip(a.samples, b.samples, strict=True):
            assert (sa.name, sa.labels, sa.timestamp) == (sb.name, sb.labels, sb.timestamp)
            assert _same(sa.value, sb.value), (sa, sb)


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
@pytest.mark.parametrize("with_extra", [False, True], ids=["snapshot", "with-collectors"])
def test_same_samples_and_bytes_as_generate_latest(openmetrics: bool, with_extra: bool) -> None:
    snap = _snapshot()
    extra = _extra() if with_extra else None
    direct = ExpositionWriter().render(snap, openmetrics=openmetrics, extra=extra)
    reference = _reference(snap, extra, openmetrics)
    assert_same_meaning(direct, reference, openmetrics)
    assert direct == reference  # byte-identical, not only equal in meaning
    text = direct.decode()
    assert 'component="all\\"\\\\\\n\\"\\\\#4"' in text  # escaped as the reference escapes
    assert "ünïcødé ✓" in text
    assert text.endswith("# EOF\n") == openmetrics
    if with_extra:
        assert "orders" in text and "inflight" in text and "phase" in text


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_shapes_at_the_edges(openmetrics: bool) -> None:
    """No components, no streams, no process figures: families without samples are left
    out exactly as the reference leaves them out; a single component; another window."""
    for snap in (
        _snapshot(0, process=False),
        _snapshot(1),
        _snapshot(5, window_seconds=300),
    ):
        direct = ExpositionWriter().render(snap, openmetrics=openmetrics)
        assert direct == _reference(snap, None, openmetrics)
        assert_same_meaning(direct, _reference(snap, None, openmetrics), openmetrics)
    empty = ExpositionWriter().render(_snapshot(0, process=False)).decode()
    assert "component_health" not in empty and "stream_" not in empty
    assert "streammetrics_process_cpu_percent" not in empty


@pytest.mark.parametrize(
    "buckets", [(0.1, 1.0, 10.0), (1e-9, 2_000_000.0), (), (-1.0, 0.0, 1.0)], ids=repr
)
def test_bucket_boundaries_are_a_parameter(buckets: tuple[float, ...]) -> None:
    """The writer and the reference take the same bounds; with a negative first bound
    prometheus-client leaves out _count and _sum, and so does the writer."""
    snap = _snapshot(6)
    hists = {
        name: [i + k + 1 for k in range(len(buckets) + 1)]
        for i, name in enumerate(snap.detailed_components)
    }
    snap = msgspec.structs.replace(snap, component_histograms=hists)
    for om in (False, True):
        direct = ExpositionWriter(buckets).render(snap, openmetrics=om)
        reference = _reference(snap, None, om, buckets)
        assert direct == reference
        assert_same_meaning(direct, reference, om)
    text = ExpositionWriter(buckets).render(snap).decode()
    assert text.count('le="+Inf"') == 6
    assert ("component_latency_seconds_count" in text) == (not buckets or buckets[0] >= 0)


def test_a_snapshot_carrying_its_buckets_is_written_over_them() -> None:
    """``histogram_buckets`` in the snapshot wins over the writer's default, as in the
    reference; bounds that change between renders make the cached histograms stale."""
    writer = ExpositionWriter()
    base = _snapshot(6)
    for bounds in ((0.005, 0.25, 2.5), (0.1, 1.0), (0.1, 1.0)):
        hists = {
            name: [i + k + 1 for k in range(len(bounds) + 1)]
            for i, name in enumerate(base.detailed_components)
        }
        snap = msgspec.structs.replace(base, histogram_buckets=bounds, component_histograms=hists)
        for om in (False, True):
            body = writer.render(snap, openmetrics=om)
            assert body == _reference(snap, None, om)
        assert (
            'le="0.25"' in body.decode() if bounds[1] == 0.25 else 'le="0.25"' not in body.decode()
        )
    # 6 histograms written per set of bounds, the repeated set reused (both formats).
    stats = writer.statistics()
    assert (
        stats.blocks_rendered - len(base.circuit_breakers) - len(base.streaming.streams) - 6 == 12
    )


def test_names_that_look_like_format_directives_are_written_as_the_reference_writes_them() -> None:
    """A histogram block is one bytes %-template of the name and the counts: names
    carrying "%" (and the escaped characters, and non-ASCII ones) are only ever its
    arguments, in the plain-counts path and the other one alike."""
    base = _snapshot(8)
    names = ["100%", "%s%d", "%%", "%(x)s", 'ü%"\\\n', "%", "a%b%c", "%ff"]
    comps = {
        name: msgspec.structs.replace(st, items_processed=i, span_latency=None)
        for name, (i, st) in zip(names, enumerate(base.detailed_components.values()), strict=True)
    }
    hists = {  # plain counts below 1e6; then a float count, then counts past 1e6
        name: [(i + k) % 3 for k in range(N_BUCKETS)] for i, name in enumerate(names)
    }
    hists[names[6]] = [0.5, *([1] * (N_BUCKETS - 1))]  # type: ignore[list-item]
    hists[names[7]] = [2_000_000] * N_BUCKETS
    snap = msgspec.structs.replace(
        base,
        detailed_components=comps,
        component_histograms=hists,
        latency_sums={name: 0.125 * i for i, name in enumerate(names)},
        circuit_breakers={},
    )
    for om in (False, True):
        direct = ExpositionWriter().render(snap, openmetrics=om)
        assert direct == _reference(snap, None, om)
    text = direct.decode()
    assert 'component_latency_seconds_bucket{component="%s%d",le="+Inf"}' in text
    assert 'component_latency_seconds_sum{component="100%"} 0.0\n' in text
    assert text.count("component_latency_seconds_count{") == len(names)


def test_a_cold_render_sends_next_to_nothing_to_the_oldest_generation() -> None:
    """What a render makes and keeps through it (blocks, columns) must not outlive two
    collections as objects the collector tracks: in the oldest generation they count
    towards its next collection, a walk of the whole heap, 100 ms and more in a process
    holding a big aggregator. Columns taken with zip(*blocks) once left an iterator per
    component there. Collections are made frequent, so that some fall in the render."""
    n = 2000
    snap = _snapshot(n)
    writer = ExpositionWriter()
    gc.collect()
    old = {id(o) for o in gc.get_objects(generation=2)}
    promoted = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal promoted
        if phase == "stop" and info["generation"] == 1:
            for o in gc.get_objects(generation=2):
                if id(o) not in old:
                    old.add(id(o))
                    promoted += 1

    thresholds = gc.get_threshold()
    gc.set_threshold(500, 4, 1_000_000)  # the oldest generation itself never collected
    gc.callbacks.append(count)
    try:
        writer.render(snap)
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*thresholds)
    assert promoted < n // 10, promoted


def test_counts_that_do_not_match_the_buckets_fail_like_the_reference() -> None:
    snap = _snapshot(3)
    bad = {name: [1, 2] for name in snap.detailed_components}
    snap = msgspec.structs.replace(snap, component_histograms=bad)
    with pytest.raises(ValueError):
        _reference(snap, None, False)
    with pytest.raises(ValueError, match="2 histogram counts for 42 buckets"):
        ExpositionWriter().render(snap)


def test_go_float_spells_values_as_prometheus_client() -> None:
    rng = random.Random(12)
    values: list[Any] = [
        0,
        1,
        -1,
        999_999,
        1_000_000,
        1_000_001,
        -(10**15) + 1,
        -(10**15),
        10**16,
        2**70,
        -(2**70),
        True,
        False,
        0.0,
        -0.0,
        1.0,
        0.1,
        1e-5,
        1e-300,
        5e-324,
        999_999.5,
        1_000_000.0,
        1234567.125,
        1e15,
        1e16,
        1.5e16,
        1e22,
        -1e22,
        -1234567.0,
        NAN,
        INF,
        -INF,
    ]
    values += [rng.randint(-(10**18), 10**18) for _ in range(2000)]
    values += [rng.randint(0, 3_000_000) for _ in range(2000)]
    values += [rng.uniform(-1e8, 1e8) for _ in range(2000)]
    values += [10 ** rng.uniform(-12, 25) for _ in range(2000)]
    for v in values:
        assert go_float(v) == floatToGoString(v), v  # type: ignore[no-untyped-call]


def _comps(snap: Snapshot, **changes: ComponentStatus | None) -> Snapshot:
    comps = dict(snap.detailed_components)
    for name, st in changes.items():
        if st is None:
            del comps[name]
        else:
            comps[name] = st
    return msgspec.structs.replace(snap, detailed_components=comps)


def test_unchanged_components_are_reused_changed_ones_rewritten_removed_ones_gone() -> None:
    base = _snapshot(4)
    names = list(base.detailed_components)
    a, b, c = names[0], names[1], names[2]
    writer = ExpositionWriter()
    writer.render(base)
    first = writer.statistics()
    comps, hists = len(base.detailed_components), len(base.component_histograms)
    blocks = comps + hists + len(base.circuit_breakers) + len(base.streaming.streams)
    assert (first.blocks_rendered, first.blocks_reused, first.cached) == (blocks, 0, blocks)

    # The same snapshot again: every block reused, the body unchanged.
    assert writer.render(base) == _reference(base, None, False)
    again = writer.statistics()
    assert (again.blocks_rendered, again.blocks_reused) == (blocks, blocks)

    # One component changed, one removed (with its histogram): one block rewritten.
    changed = msgspec.structs.replace(base.detailed_components[a], items_processed=424242)
    snap = _comps(base, **{a: changed, b: None})
    hist = dict(snap.component_histograms)
    del hist[b]
    snap = msgspec.structs.replace(snap, component_histograms=hist)
    body = writer.render(snap)
    now = writer.statistics()
    assert now.blocks_rendered == blocks + 1
    assert now.cached == first.cached - 2
    assert body == _reference(snap, None, False)
    shown = {
        s.labels["component"]: s.value
        for f in parse_text(body.decode())
        for s in f.samples
        if f.name == "component_items_processed"
    }
    assert shown[a] == 424242 and b not in shown and c in shown

    # A histogram's counts changed: only its block is rewritten.
    hist = dict(snap.component_histograms)
    hist[c] = [n + 1 for n in hist[c]]
    snap = msgspec.structs.replace(snap, component_histograms=hist)
    assert writer.render(snap) == _reference(snap, None, False)
    assert writer.statistics().blocks_rendered == blocks + 2

    # The quantiles' window label changed: every component block is rewritten.
    other = msgspec.structs.replace(
        snap, performance=msgspec.structs.replace(snap.performance, window_seconds=300)
    )
    assert writer.render(other) == _reference(other, None, False)
    assert writer.statistics().blocks_rendered == blocks + 2 + len(other.detailed_components)


def test_equal_components_are_reused_by_value() -> None:
    """A new tick with nothing new brings equal, not identical, structs: reused by value. A
    block holding a NaN is never equal to itself, so it is written again (the same text)."""
    base = _snapshot(4)
    writer = ExpositionWriter()
    writer.render(base)
    blocks = writer.statistics().blocks_rendered
    copy = msgspec.msgpack.decode(msgspec.msgpack.encode(base), type=Snapshot)
    first = next(iter(base.detailed_components))
    assert copy.detailed_components[first] is not base.detailed_components[first]
    assert writer.render(copy) == _reference(base, None, False)
    pairs = [
        *zip(copy.detailed_components.values(), base.detailed_components.values(), strict=True),
        *zip(copy.streaming.streams.values(), base.streaming.streams.values(), strict=True),
    ]
    with_nan = sum(1 for x, y in pairs if x != y)
    assert 1 <= with_nan < len(pairs)  # the fixture has both kinds: this checks the rule
    assert writer.statistics().blocks_rendered == blocks + with_nan


def test_the_cache_serves_both_formats() -> None:
    snap = _snapshot(8)
    writer = ExpositionWriter()
    text = writer.render(snap)
    om = writer.render(snap, openmetrics=True)
    assert writer.statistics().blocks_reused == writer.statistics().blocks_rendered
    assert text == _reference(snap, None, False)
    assert om == _reference(snap, None, True)


def test_promtool_accepts_the_direct_exposition() -> None:
    """promtool checks the text the writer makes of every odd shape (and of the user
    collectors beside it)."""
    promtool = need("promtool")  # CI installs it: missing is a failure, not a skip
    body = ExpositionWriter().render(_snapshot(), extra=_extra())
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False, timeout=60
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.mark.anyio
@pytest.mark.parametrize("accept", [None, OPENMETRICS], ids=["text", "openmetrics"])
async def test_endpoint_serves_the_direct_text_with_custom_collectors(accept: str | None) -> None:
    """Through a real server: content negotiation, the user collectors after the
    snapshot's families, and the same samples as generate_latest over the same snapshot."""
    clock = FakeClock()
    service = service_for(seed(clock), clock)
    service.add_collector(Users())
    headers = {"accept": accept} if accept else {}
    async with running(create_app(service)) as client:
        r = await client.get("/metrics", headers=headers)
        again = await client.get("/metrics", headers=headers)
    assert r.status_code == 200
    om = accept is not None
    assert r.headers["content-type"] == (
        OPENMETRICS if om else "text/plain; version=0.0.4; charset=utf-8"
    )
    assert again.content == r.content  # one render per snapshot
    snap = await service.snapshot()
    extra = CollectorRegistry(auto_describe=False)
    extra.register(Users())  # what the custom collection replays, and its error counter
    reference = _reference(snap, extra, om).decode()
    errors_family = "streammetrics_collector_errors"
    assert errors_family in r.text
    assert_same_meaning(
        r.text.split(f"# HELP {errors_family}")[0].encode() + (b"# EOF\n" if om else b""),
        reference.encode(),
        om,
    )
    assert service.exposition_statistics().renders == 1


def _run_counting(steps: Steps[Exposition]) -> tuple[Exposition, int]:
    """Run ``steps`` to the end; what they return and how often they yielded."""
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, yields
        yields += 1


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_a_render_in_steps_gives_the_same_bytes_in_pieces(openmetrics: bool) -> None:
    """Yielding as often as it can (step_s=0), every 2 ms, or never: the pieces join to
    the one-shot render's bytes (the reference's), and the cache counts the same."""
    snap = _snapshot(600)
    extra = _extra()
    reference = _reference(snap, extra, openmetrics)
    bare = _reference(snap, None, openmetrics)
    one_shot = ExpositionWriter()
    assert one_shot.render(snap, openmetrics=openmetrics, extra=extra) == reference
    for step_s in (0.0, 0.002, None):
        writer = ExpositionWriter()
        steps = writer.render_steps(snap, openmetrics=openmetrics, extra=extra, step_s=step_s)
        exposition, yields = _run_counting(steps)
        assert exposition.body() == reference
        assert exposition.size == len(reference) == sum(map(len, exposition.pieces))
        assert all(exposition.pieces)
        # Pieces near 256 KiB: a few for this body, none far over it.
        assert len(exposition.pieces) >= len(reference) // (512 * 1024)
        assert max(map(len, exposition.pieces)) < 1024 * 1024
        if step_s == 0.0:  # the clock is read every 8 components: a yield there each time
            assert yields > len(snap.detailed_components) // 8
        if step_s is None:
            assert yields == 0
        assert writer.statistics() == one_shot.statistics()
        # Warm, in steps too: every block reused, the same bytes.
        again, _ = _run_counting(writer.render_steps(snap, openmetrics=openmetrics, step_s=0.0))
        assert again.body() == bare
        assert writer.statistics().blocks_reused == writer.statistics().blocks_rendered


def test_a_render_abandoned_halfway_leaves_the_cache_as_it_was() -> None:
    """A render closed between two steps neither caches half a snapshot nor holds the
    writer; while one is under way another is refused, not waited for."""
    base = _snapshot(40)
    writer = ExpositionWriter()
    writer.render(base)
    before = writer.statistics()
    changed = _comps(
        base,
        **{
            name: msgspec.structs.replace(st, items_processed=st.items_processed + 1)
            for name, st in base.detailed_components.items()
        },
    )
    steps = writer.render_steps(changed, step_s=0.0)
    for _ in range(3):
        next(steps)
    with pytest.raises(RuntimeError, match="another render"):
        next(writer.render_steps(changed))
    steps.close()
    after = writer.statistics()
    assert (after.blocks_rendered, after.blocks_reused, after.cached) == (
        before.blocks_rendered,
        before.blocks_reused,
        before.cached,
    )
    assert writer.render(base) == _reference(base, None, False)  # all of it reused
    assert writer.statistics().blocks_rendered == before.blocks_rendered
    assert writer.render(changed) == _reference(changed, None, False)


def test_floats_spelled_once_are_spelled_alike_again() -> None:
    """Spellings remembered from one render serve the next (components changed, their
    floats not), and keep 0.0 and -0.0 apart (equal keys of a dict)."""
    snap = _snapshot(24)
    writer = ExpositionWriter()
    writer.render(snap)
    bumped = _comps(
        snap,
        **{
            name: msgspec.structs.replace(st, items_processed=st.items_processed + 1)
            for name, st in snap.detailed_components.items()
        },
    )
    assert writer.render(bumped) == _reference(bumped, None, False)
    zero = _comps(
        snap,
        **{
            name: msgspec.structs.replace(st, health=-0.0 if i % 2 else 0.0)
            for i, (name, st) in enumerate(snap.detailed_components.items())
        },
    )
    for _ in range(2):
        text = writer.render(zero)
        assert text == _reference(zero, None, False)
    assert "-0.0\n" in text.decode() and "} 0.0\n" in text.decode()


def test_a_render_step_lasts_as_long_as_the_work_it_waited_for() -> None:
    """The step (``RENDER_STEP_S``) beside short work; after waiting longer for others,
    about as long; never more than ``_SHARE_CAP_S`` (twice the step), however long it
    waited; and at every reading of the clock when the step is 0."""
    step, cap = RENDER_STEP_S, _SHARE_CAP_S
    pace = _Pace(step)
    assert pace.until - perf_counter() <= step
    between = (step + cap) / 2
    for waited, at_least, at_most in (
        (0.0, 0.9 * step, cap),
        (between, 0.95 * between, cap),
        (0.2, 0.95 * cap, cap),
    ):
        pace.pause()
        time.sleep(waited)
        # The step is measured from either side of the restart, so that the process being
        # descheduled around it (a busy machine) cannot move it out of its bounds.
        before = perf_counter()
        pace.restart()
        after = perf_counter()
        assert pace.until - before >= at_least, (waited, pace.until - before)
        assert pace.until - after <= at_most, (waited, pace.until - after)
    never = _Pace(0.0)
    never.pause()
    time.sleep(0.01)
    never.restart()
    assert never.until <= perf_counter()
