"""Exported histogram buckets: configurable, and exact against prometheus-client.

A latency must land in the exported bucket that a prometheus-client ``Histogram`` with
the same boundaries puts it in, whatever the boundaries (the ladder the windows count in
holds every one of them). Compared through the real parts: events folded by an
``Aggregator``, rendered by the collector, parsed back by prometheus-client's parser,
beside a real ``Histogram`` observing the same latencies.
"""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streammetrics import Event, MetricsEndpoint
from streammetrics.aggregator import Aggregator
from streammetrics.buckets import (
    DEFAULT_HISTOGRAM_BUCKETS,
    LATENCY_BOUNDS,
    MAX_HISTOGRAM_BUCKETS,
    Ladder,
)
from streammetrics.bus import EventBus
from streammetrics.errors import ConfigError
from streammetrics.judge.health import HealthJudge
from streammetrics.prometheus.collector import SnapshotCollector

CUSTOM = (0.0003, 0.002, 0.0035, 0.2, 0.3, 1.7, 42.0)


def _latencies(bounds: tuple[float, ...], n: int = 3000) -> list[float]:
    """Lognormal latencies, plus each boundary exactly and its float neighbours (where a
    bucket choice can go wrong)."""
    rng = random.Random(11)
    out = [rng.lognormvariate(-4, 2) for _ in range(n)]
    for b in bounds:
        out += [b, b * (1 - 1e-12), b * (1 + 1e-12)]
    return out


def _exported(buckets: tuple[float, ...] | None, latencies: list[float]) -> dict[str, float]:
    agg = Aggregator(histogram_buckets=buckets)
    agg.fold_events([Event("api", "processed", latency=x) for x in latencies])
    snap = HealthJudge().judge(agg.figures())
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: snap))
    text = generate_latest(reg).decode()
    got: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "component_latency_seconds_bucket":
                got[s.labels["le"]] = s.value
    return got


def _reference(buckets: tuple[float, ...], latencies: list[float]) -> dict[str, float]:
    reg = CollectorRegistry()
    h = Histogram("component_latency_seconds", "ref", registry=reg, buckets=buckets)
    for x in latencies:
        h.observe(x)
    got: dict[str, float] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            if s.name == "component_latency_seconds_bucket":
                got[s.labels["le"]] = s.value
    return got


@pytest.mark.parametrize("buckets", [None, CUSTOM, (0.5,)], ids=["default", "custom", "one"])
def test_every_latency_lands_in_prometheus_clients_bucket(
    buckets: tuple[float, ...] | None,
) -> None:
    bounds = buckets if buckets is not None else DEFAULT_HISTOGRAM_BUCKETS
    latencies = _latencies(bounds)
    assert _exported(buckets, latencies) == _reference(bounds, latencies)


def test_the_default_is_prometheus_clients_default_buckets() -> None:
    assert len(DEFAULT_HISTOGRAM_BUCKETS) <= 15
    assert tuple(Histogram.DEFAULT_BUCKETS[:-1]) == DEFAULT_HISTOGRAM_BUCKETS


def test_the_ladder_holds_every_exported_boundary_and_the_quantile_ladder() -> None:
    ladder = Ladder([CUSTOM, DEFAULT_HISTOGRAM_BUCKETS])
    assert set(LATENCY_BOUNDS) <= set(ladder.bounds)
    assert set(CUSTOM) | set(DEFAULT_HISTOGRAM_BUCKETS) <= set(ladder.bounds)
    assert list(ladder.bounds) == sorted(set(ladder.bounds))
    # An exported bucket is the run of ladder buckets up to its boundary: one count in
    # every ladder bucket exports as the number of ladder bounds in each exported bucket.
    counts = ladder.exporter(CUSTOM)([1] * ladder.nbuckets)
    edges = (0.0, *CUSTOM)
    pairs = zip(edges[:-1], CUSTOM, strict=True)
    want = [sum(lo < b <= hi for b in ladder.bounds) for lo, hi in pairs]
    assert counts == [*want, ladder.nbuckets - sum(want)]


@pytest.mark.parametrize(
    ("buckets", "why"),
    [
        ([], "1 to 30"),
        ([0.1] * 2, "must increase"),
        ([0.2, 0.1], "must increase"),
        ([0.0, 1.0], "> 0"),
        ([float("inf")], "finite"),
        ([float("nan")], "finite"),
        ([0.001 * (i + 1) for i in range(MAX_HISTOGRAM_BUCKETS + 1)], "1 to 30"),
    ],
)
def test_bad_boundaries_are_refused_naming_the_setting(buckets: list[float], why: str) -> None:
    with pytest.raises(ConfigError, match="histogram_buckets") as info:
        MetricsEndpoint(name="m", port=0, histogram_buckets=buckets)
    assert why in str(info.value)


def test_an_aggregator_is_refused_by_a_bus_with_another_ladder() -> None:
    """Probes bucket in the bus's ladder: an aggregator counting in another could not
    fold their deltas, so the bus refuses it when it subscribes, not at its first flush."""
    agg = Aggregator(histogram_buckets=CUSTOM)
    with pytest.raises(ValueError, match=r"ladder=bus\.ladder"):
        EventBus().subscribe(agg)
    EventBus(agg.ladder).subscribe(agg)  # the same ladder: fine
