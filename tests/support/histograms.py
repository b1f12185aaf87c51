"""Latency histograms as probes and aggregators keep them: a count per bucket of the
default ladder (``buckets.DEFAULT_LADDER``: the √2 ladder with the default exported
boundaries)."""

from __future__ import annotations

from bisect import bisect_left

from streammetrics.buckets import DEFAULT_HISTOGRAM_BUCKETS, DEFAULT_LADDER

LADDER = DEFAULT_LADDER.bounds
N_BUCKETS = DEFAULT_LADDER.nbuckets


def bucket_index(seconds: float) -> int:
    """The ladder bucket ``seconds`` falls in."""
    return bisect_left(LADDER, seconds)


def exported_index(seconds: float) -> int:
    """The exported bucket (default ``histogram_buckets``) ``seconds`` falls in."""
    return bisect_left(DEFAULT_HISTOGRAM_BUCKETS, seconds)


def histogram(*latencies: float) -> list[int]:
    """The bucket counts of ``latencies``."""
    h = [0] * N_BUCKETS
    for x in latencies:
        h[bucket_index(x)] += 1
    return h


def exported_histogram(*latencies: float) -> list[int]:
    """The counts of ``latencies`` in the default exported buckets (``+Inf`` last)."""
    h = [0] * (len(DEFAULT_HISTOGRAM_BUCKETS) + 1)
    for x in latencies:
        h[exported_index(x)] += 1
    return h


def bucket_mid(seconds: float) -> float:
    """The p50 of a single observation of ``seconds``: its bucket's midpoint."""
    i = bucket_index(seconds)
    lower = LADDER[i - 1] if i else 0.0
    return lower + (LADDER[i] - lower) * 0.5
