"""Latency buckets: the ladder the windows count in, and the buckets ``/metrics`` exports.

Two needs pull apart. Quantiles want fine buckets of a constant ratio (the √2 ladder,
``LATENCY_BOUNDS``: 100 µs to ~105 s, about 3 % relative error after interpolation);
a Prometheus histogram wants few buckets on round boundaries (``histogram_buckets``,
prometheus-client's defaults unless configured), and each boundary exact: a latency
must land in the exported bucket a prometheus-client ``Histogram`` with those
boundaries would put it in.

Both are met by counting in one ladder that holds every bound of both: the √2 ladder
merged with the exported boundaries of every endpoint fed by one bus. An exported
bucket is then a run of ladder buckets, summed (``Ladder.exporter``), and exact,
because ``le`` is inclusive on both sides; the quantiles only gain from the extra
bounds. Probes bucket into the bus's ladder, so the ladder is fixed when the bus is made
(the harness merges the boundaries of every MetricsEndpoint in the blueprint).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, chain, repeat
from operator import itemgetter, sub
from typing import Final

__all__ = (
    "DEFAULT_HISTOGRAM_BUCKETS",
    "DEFAULT_LADDER",
    "LATENCY_BOUNDS",
    "MAX_HISTOGRAM_BUCKETS",
    "Ladder",
    "bucket_latencies",
    "bucket_sorted",
    "bucketed_extremes",
    "check_histogram_buckets",
)

#: Upper bounds (``le``) of the quantile ladder in seconds: 100 µs to ~105 s, factor √2.
LATENCY_BOUNDS: Final[tuple[float, ...]] = tuple(round(1e-4 * 2 ** (i / 2), 9) for i in range(41))

#: The exported boundaries unless configured: prometheus-client's default buckets.
DEFAULT_HISTOGRAM_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

#: Boundaries an endpoint may export (each adds a bucket to every window it counts in).
MAX_HISTOGRAM_BUCKETS: Final = 30


def check_histogram_buckets(bounds: Sequence[float]) -> None:
    """Raise ``ValueError`` unless ``bounds`` are 1 to ``MAX_HISTOGRAM_BUCKETS`` finite,
    positive, strictly increasing seconds (``+Inf`` is always added, never listed)."""
    if not 1 <= len(bounds) <= MAX_HISTOGRAM_BUCKETS:
        raise ValueError(
            f"histogram_buckets has {len(bounds)} boundaries; 1 to {MAX_HISTOGRAM_BUCKETS} "
            "are allowed (+Inf is added by itself)"
        )
    for i, b in enumerate(bounds):
        if not math.isfinite(b) or b <= 0:
            raise ValueError(
                f"histogram_buckets[{i}] is {b!r}: boundaries are finite seconds > 0 "
                "(+Inf is added by itself)"
            )
        if i and b <= bounds[i - 1]:
            raise ValueError(
                f"histogram_buckets[{i}] is {b!r}, not above {bounds[i - 1]!r}: "
                "boundaries must increase"
            )


#: From how many latencies ``bucket_latencies`` sorts them rather than bisect each one.
_SORT_FROM: Final = 16


def bucket_latencies(
    latencies: list[float] | list[int], bounds: Sequence[float]
) -> tuple[int, list[int], float]:
    """``(first, counts, total)`` of ``latencies`` over the upper ``bounds``: ``counts[j]``
    of them fall in bucket ``first + j`` (``bisect_left(bounds, latency) == first + j``;
    the buckets past the last count are empty), and ``total`` is their sum, added in the
    order given. Sorts ``latencies`` in place (the caller's own list, which it no longer
    needs in order).

    Why not ``bisect_left`` per latency, as each arrives: that is six compares of boxed
    floats through the generic comparison, about half the cost of decoding the event
    that carried the latency. Sorting a list of floats uses the sort's float-only
    comparison, and then each bound in the range the latencies span is bisected once
    into the sorted list, so a batch costs a sort and one bisect per bound, not one per
    latency. Few latencies, or a NaN among them (which sorts nowhere), are bisected one
    by one, as ``bisect_left`` places them; the counts are the same either way.
    """
    n = len(latencies)
    total = sum(latencies, 0.0)
    if n < _SORT_FROM or total != total:  # few, or a NaN (or +inf with -inf): one by one
        if not n:
            return (0, [], total)
        ks = [bisect_left(bounds, x) for x in latencies]
        first = min(ks)
        counts = [0] * (max(ks) - first + 1)
        for k in ks:
            counts[k - first] += 1
        return (first, counts, total)
    latencies.sort()
    first, counts = bucket_sorted(latencies, bounds)
    return (first, counts, total)


def bucket_sorted(
    ordered: list[float] | list[int], bounds: Sequence[float]
) -> tuple[int, list[int]]:
    """``(first, counts)`` of ``ordered`` (non-empty, sorted, no NaN) over the upper
    ``bounds``, as ``bucket_latencies`` gives them: for a caller that sorts its latencies
    itself (the OTLP receiver's integer nanoseconds, which need no float total and
    whose smallest it checks first)."""
    first = bisect_left(bounds, ordered[0])
    last = bisect_left(bounds, ordered[-1])
    # at_most[j]: how many are <= bounds[first + j], so in buckets first .. first + j
    at_most = list(map(bisect_right, repeat(ordered, last - first), bounds[first:last]))
    at_most.append(len(ordered))
    return (first, list(map(sub, at_most, chain((0,), at_most))))


def bucketed_extremes(latencies: Sequence[float], total: float) -> tuple[float, float]:
    """The smallest and largest of ``latencies`` just given to ``bucket_latencies``, with
    the ``total`` it returned: the ends of the list when it sorted it, else ``min`` and
    ``max``. A NaN is no extreme (it compares with nothing): it is left out, and a batch
    of nothing else gives ``(inf, -inf)``, which no extreme kept so far yields to."""
    if total == total:
        if len(latencies) >= _SORT_FROM:  # sorted in place by bucket_latencies
            return latencies[0], latencies[-1]
        known = latencies
    else:  # a NaN, or +inf with -inf: the order is no order
        known = [x for x in latencies if x == x]
    return min(known, default=math.inf), max(known, default=-math.inf)


class Ladder:
    """The bucket bounds one bus, its probes and its aggregators count latencies in.

    ``exported``: the boundary lists that must be exact (each endpoint's
    ``histogram_buckets``); the ladder is ``LATENCY_BOUNDS`` merged with all of them
    (``LATENCY_BOUNDS`` alone when there are none).
    """

    __slots__ = ("bounds", "nbuckets")

    def __init__(self, exported: Iterable[Sequence[float]] = ()) -> None:
        merged: set[float] = set(LATENCY_BOUNDS)
        for bounds in exported:
            check_histogram_buckets(bounds)
            merged.update(float(b) for b in bounds)
        #: Upper bounds, increasing; the ``+Inf`` bucket comes after the last.
        self.bounds: tuple[float, ...] = tuple(sorted(merged))
        #: Counts per histogram: one per bound and one for ``+Inf``.
        self.nbuckets = len(self.bounds) + 1

    def covers(self, exported: Sequence[float]) -> bool:
        """Whether every boundary of ``exported`` is a bound of this ladder (exact)."""
        have = set(self.bounds)
        return all(float(b) in have for b in exported)

    def exporter(self, exported: Sequence[float]) -> Callable[[Iterable[int]], list[int]]:
        """A function from a ladder histogram to its counts in the ``exported`` buckets
        (one per boundary, then ``+Inf``; not cumulative). ``exported`` must be covered.
        The histogram may be any iterable of its counts, read once (a window's lifetime
        counts summed on the fly: no list made only to be exported)."""
        have = set(self.bounds)
        missing = [b for b in exported if float(b) not in have]
        if missing:
            raise ValueError(f"boundaries {missing} are not in this ladder")
        ends = [self.bounds.index(float(b)) + 1 for b in exported]
        # Each exported bucket is a difference of two running counts: one running sum
        # and two picks, in C, instead of a slice sum per bucket (a tick exports the
        # histogram of every component that timed something).
        if not ends:
            return lambda counts: [sum(counts)]  # +Inf alone
        # cum[k] is the count of the first k ladder buckets; there are at least two
        # picks each, so itemgetter gives a tuple.
        upper = itemgetter(*ends, self.nbuckets)
        lower = itemgetter(0, *ends)

        def export(counts: Iterable[int]) -> list[int]:
            cum = [0, *accumulate(counts)]
            return list(map(sub, upper(cum), lower(cum)))

        return export

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ladder) and other.bounds == self.bounds

    def __hash__(self) -> int:
        return hash(self.bounds)

    def __repr__(self) -> str:
        return f"Ladder({self.nbuckets} buckets)"


#: The ladder of a bus, probe or aggregator made without one: ``LATENCY_BOUNDS`` with the
#: default exported buckets, so that a default endpoint's buckets are exact.
DEFAULT_LADDER: Final = Ladder([DEFAULT_HISTOGRAM_BUCKETS])
