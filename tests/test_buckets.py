"""buckets.bucket_latencies against its definition: each latency in the bucket
``bisect_left(bounds, latency)`` puts it in, and the sum added in the order given."""

from __future__ import annotations

import math
import random
from bisect import bisect_left

import pytest

from streammetrics.buckets import (
    DEFAULT_LADDER,
    LATENCY_BOUNDS,
    Ladder,
    bucket_latencies,
    bucket_sorted,
    bucketed_extremes,
)


def one_by_one(latencies: list[float], nbuckets: int, bounds: tuple[float, ...]) -> list[int]:
    h = [0] * nbuckets
    for x in latencies:
        h[bisect_left(bounds, x)] += 1
    return h


def spread(first: int, counts: list[int], nbuckets: int) -> list[int]:
    h = [0] * nbuckets
    h[first : first + len(counts)] = counts
    return h


def sequential_sum(latencies: list[float]) -> float:
    total = 0.0
    for x in latencies:
        total += x
    return total


def sample(rng: random.Random, n: int, bounds: tuple[float, ...]) -> list[float]:
    """Latencies of every sort a caller may hand over: typical ones, exact bounds (a
    bound's own bucket holds it), zero, past the last bound (+Inf), and, from code that
    skips validation, negative ones."""
    out: list[float] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(rng.lognormvariate(math.log(0.005), 1.5))
        elif r < 0.8:
            out.append(rng.choice(bounds))
        elif r < 0.85:
            out.append(0.0)
        elif r < 0.9:
            out.append(bounds[-1] * rng.uniform(1.0, 3.0))
        elif r < 0.95:
            out.append(-rng.random())
        else:
            out.append(math.nextafter(rng.choice(bounds), math.inf))
    return out


@pytest.mark.parametrize("ladder", [DEFAULT_LADDER, Ladder(), Ladder([[0.003, 0.2, 7.0]])])
@pytest.mark.parametrize("seed", range(4))
def test_counts_and_sum_are_those_of_bisecting_each_latency(ladder: Ladder, seed: int) -> None:
    rng = random.Random(seed)
    for n in [0, 1, 2, 15, 16, 17, 50, 300, *(rng.randint(1, 400) for _ in range(20))]:
        lat = sample(rng, n, ladder.bounds)
        expected = one_by_one(lat, ladder.nbuckets, ladder.bounds)
        want_sum = sequential_sum(lat)
        first, counts, total = bucket_latencies(list(lat), ladder.bounds)
        assert spread(first, counts, ladder.nbuckets) == expected
        assert sum(counts) == n
        assert (counts[0] > 0 and counts[-1] > 0) if n else counts == []
        assert total == pytest.approx(want_sum, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_sorted_integer_nanoseconds_bucket_as_bisecting_each(seed: int) -> None:
    """``bucket_sorted`` over sorted integers (the OTLP receiver's nanoseconds, against
    the ladder in nanoseconds): the counts of bisecting each one, from one latency on,
    the last past every bound included."""
    rng = random.Random(seed)
    bounds = [round(b * 1e9) for b in DEFAULT_LADDER.bounds]
    nb = DEFAULT_LADDER.nbuckets
    for n in [1, 2, 15, 16, 300, *(rng.randint(1, 400) for _ in range(10))]:
        lat = sorted(
            rng.choice((rng.choice(bounds), 0, bounds[-1] * 2, round(rng.lognormvariate(15, 2))))
            for _ in range(n)
        )
        first, counts = bucket_sorted(lat, bounds)
        h = [0] * nb
        for x in lat:
            h[bisect_left(bounds, x)] += 1
        assert spread(first, counts, nb) == h
        assert counts[0] > 0 and counts[-1] > 0


@pytest.mark.parametrize("n", [3, 40])
def test_nan_and_infinities_are_bucketed_as_bisect_left_puts_them(n: int) -> None:
    """A NaN sorts nowhere: the latencies that hold one are bisected one by one, so it is
    counted in bucket 0 as ``bisect_left`` places it, and nothing else moves."""
    rng = random.Random(n)
    lat = [rng.uniform(0.0, 2.0) for _ in range(n)] + [math.nan, math.inf, -math.inf]
    rng.shuffle(lat)
    bounds = LATENCY_BOUNDS
    first, counts, total = bucket_latencies(list(lat), bounds)
    assert spread(first, counts, len(bounds) + 1) == one_by_one(lat, len(bounds) + 1, bounds)
    assert math.isnan(total)
    # only infinities: no NaN in the sum, sorted
    lat = [rng.uniform(0.0, 2.0) for _ in range(n)] + [math.inf] * 2
    first, counts, total = bucket_latencies(list(lat), bounds)
    assert spread(first, counts, len(bounds) + 1) == one_by_one(lat, len(bounds) + 1, bounds)
    assert total == math.inf


def test_sorts_the_list_it_is_given_in_place() -> None:
    lat = [0.5, 0.001, 0.02] * 10
    bucket_latencies(lat, LATENCY_BOUNDS)
    assert lat == sorted(lat)


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 300])
def test_the_extremes_of_a_bucketed_batch_are_its_min_and_max_without_nan(n: int) -> None:
    rng = random.Random(n)
    lat = [rng.uniform(0.0, 2.0) for _ in range(n)]
    *_, total = bucket_latencies(got := list(lat), LATENCY_BOUNDS)
    assert bucketed_extremes(got, total) == (min(lat), max(lat))
    with_nan = [math.nan, *lat, math.nan]
    *_, total = bucket_latencies(got := list(with_nan), LATENCY_BOUNDS)
    assert bucketed_extremes(got, total) == (min(lat), max(lat))
    assert bucketed_extremes([math.nan], math.nan) == (math.inf, -math.inf)
