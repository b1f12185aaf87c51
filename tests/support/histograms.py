"""Latency histograms as the windows keep them: a count per bucket of ``LATENCY_BOUNDS``."""

from __future__ import annotations

from streammetrics.windows import LATENCY_BOUNDS, N_BUCKETS, bucket_index


def histogram(*latencies: float) -> list[int]:
    """The bucket counts of ``latencies``."""
    h = [0] * N_BUCKETS
    for x in latencies:
        h[bucket_index(x)] += 1
    return h


def bucket_mid(seconds: float) -> float:
    """The p50 of a single observation of ``seconds``: its bucket's midpoint."""
    i = bucket_index(seconds)
    lower = LATENCY_BOUNDS[i - 1] if i else 0.0
    return lower + (LATENCY_BOUNDS[i] - lower) * 0.5
