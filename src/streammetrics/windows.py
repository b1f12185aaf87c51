"""Rolling time windows: counts and a latency histogram over the last 10 s, 60 s and 300 s.

A window is a ring of one-second slots (sixty of them) feeding a ring of ten-second
slots (thirty of them). Folding touches only the slot in progress, so it costs O(1)
whatever the traffic; each view keeps a running sum of its completed slots, added to
when a slot completes and subtracted from when it leaves the view, so reading costs
O(histogram buckets), never O(events) or O(slots). Memory is bounded by the slot count.

The 10 s and 60 s views expire with one-slot (1 s) precision; the 300 s view with
ten-slot (10 s) precision and says how many seconds it really covers, so rates are
exact for what is inside. Every statistic of a view shares that one definition: the
count, the rate and the quantiles expire together (a p99 that outlives the count it came
from describes requests no longer counted). An empty view says so: rate 0 and quantiles
``None`` (the last quantiles seen would show a latency for traffic that stopped long ago).

Events are windowed by arrival time, like statsd: a late event counts in the slot
in progress, never in one that a reader may already have seen.

Quantiles are interpolated inside a bucket, clamped to what was observed: each timed
slot keeps the smallest and the largest latency it holds, a view takes the min and max
over the slots it spans (exact: the extremes of a union are the extremes of its parts),
and the bucket a rank falls in is interpolated from the larger of its lower bound and
that min to the smaller of its upper bound and that max. A narrow stream that fills
one wide bucket then reads inside the values it had, not across the whole bucket, and
a constant latency reads as itself. A histogram folded without its extremes (a probe's
delta) leaves its view unclamped, as before.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import accumulate, repeat
from operator import add, sub
from typing import Final, Literal

import msgspec

from .buckets import LATENCY_BOUNDS

__all__ = (
    "LATENCY_BOUNDS",
    "N_BUCKETS",
    "VIEWS",
    "RollingWindow",
    "ViewSeconds",
    "Views",
    "WindowStats",
    "bucket_index",
    "quantile",
)

ViewSeconds = Literal[10, 60, 300]
VIEWS: Final[tuple[ViewSeconds, ...]] = (10, 60, 300)

#: Buckets per histogram over ``LATENCY_BOUNDS`` (the √2 ladder, ``buckets``): one per
#: bound plus the ``+Inf`` bucket. An aggregator's ladder may have more (``Ladder``).
N_BUCKETS: Final[int] = len(LATENCY_BOUNDS) + 1

_FINE: Final = 60  # one-second slots
_COARSE: Final = 30  # ten-second slots
_PER_COARSE: Final = 10
# Counters kept per slot, in this order:
_P, _E, _M, _B, _LC, _LS = range(6)

_Vec = list[float]
_Hist = list[int]


def bucket_index(latency: float, bounds: Sequence[float] = LATENCY_BOUNDS) -> int:
    """The index of the bucket a latency falls in (``latency <= bounds[i]``)."""
    return bisect_left(bounds, latency)


def quantile(
    counts: Sequence[int],
    q: float,
    bounds: Sequence[float] = LATENCY_BOUNDS,
    lowest: float = -math.inf,
    highest: float = math.inf,
) -> float | None:
    """The q-quantile of a bucket histogram over ``bounds`` (one count per bound, then
    ``+Inf``), interpolated like PromQL's ``histogram_quantile``, but inside
    ``[max(lower bound, lowest), min(upper bound, highest)]`` of the bucket the rank
    falls in: ``lowest``/``highest`` are the smallest and largest latency the histogram
    holds, when known (unclamped by default).

    ``None`` for an empty histogram; the largest finite bound when the rank falls in ``+Inf``.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, c in enumerate(counts):
        if c and cumulative + c >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower, upper = _clamp(bounds[i - 1] if i else 0.0, bounds[i], lowest, highest)
            return lower + (upper - lower) * ((rank - cumulative) / c)
        cumulative += c
    return bounds[-1]


def _clamp(lower: float, upper: float, lowest: float, highest: float) -> tuple[float, float]:
    """A bucket's ``(lower, upper]`` narrowed to the observed ``[lowest, highest]``.

    The bucket is the one a rank fell in, so it holds values and, with true extremes,
    the narrowed range is never empty; extremes that do not fit the histogram (a
    caller's mistake) leave the bucket whole rather than read outside it."""
    lo = lowest if lowest > lower else lower
    hi = highest if highest < upper else upper
    return (lo, hi) if lo <= hi else (lower, upper)


def _quantiles3(
    hists: Sequence[Sequence[int] | None],
    bounds: Sequence[float] = LATENCY_BOUNDS,
    lowest: float = -math.inf,
    highest: float = math.inf,
) -> tuple[float | None, float | None, float | None]:
    """``quantile`` at 0.5, 0.95 and 0.99 of the sum of ``hists`` (None ones left out).

    A snapshot reads three quantiles per view for every component, so this is the
    hot part of a tick: the merge and the running sum are done in C (``map``,
    ``accumulate``), and each rank is found by ``bisect`` instead of a Python walk;
    the interpolation is ``quantile``'s, to the last bit.
    """
    present = [h for h in hists if h is not None]
    if not present:
        return None, None, None
    if len(present) == 1:
        cum = list(accumulate(present[0]))
    elif len(present) == 2:
        cum = list(accumulate(map(add, present[0], present[1])))
    elif len(present) == 3:
        cum = list(accumulate(map(add, map(add, present[0], present[1]), present[2])))
    else:
        cum = list(accumulate(map(sum, zip(*present, strict=True))))
    total = cum[-1]
    if not total:
        return None, None, None
    return (
        _at_rank(cum, 0.5 * total, bounds, lowest, highest),
        _at_rank(cum, 0.95 * total, bounds, lowest, highest),
        _at_rank(cum, 0.99 * total, bounds, lowest, highest),
    )


def _at_rank(
    cum: list[int], rank: float, bounds: Sequence[float], lowest: float, highest: float
) -> float:
    """The interpolated value at ``rank`` of a cumulative bucket histogram."""
    i = bisect_left(cum, rank)  # the first bucket whose running count reaches the rank
    if i >= len(bounds):
        return bounds[-1]
    if i:
        lower, before = bounds[i - 1], cum[i - 1]
    else:
        lower, before = 0.0, 0
    upper = bounds[i]
    # _clamp, written out: three of these a view, for every component, every tick
    lo = lowest if lowest > lower else lower
    hi = highest if highest < upper else upper
    if lo <= hi:
        lower, upper = lo, hi
    return lower + (upper - lower) * ((rank - before) / (cum[i] - before))


class WindowStats(msgspec.Struct, frozen=True, gc=False):
    """One view of a window, read at one instant."""

    window_seconds: int
    """The nominal length of the view: 10, 60 or 300."""
    span_seconds: float
    """The seconds the figures really cover (shorter while the window is young)."""
    processed: int
    errors: int
    messages: int
    bytes: int
    latency_count: int
    latency_sum: float
    items_per_second: float
    """Processed items per second over ``span_seconds``."""
    message_rate: float
    """Stream messages per second over ``span_seconds``."""
    error_rate: float
    """errors / (processed + errors); 0.0 when nothing happened."""
    p50: float | None
    p95: float | None
    p99: float | None


_Quantiles = tuple[float | None, float | None, float | None]
_NO_QUANTILES: Final[_Quantiles] = (None, None, None)


def _stats(
    seconds: ViewSeconds,
    now: float,
    res: float,
    origin: float,
    start: float,
    vec: Sequence[float],
    q: _Quantiles,
) -> WindowStats:
    """A view's figures from its summed counters ``vec`` and quantiles ``q``: ``start``
    is where the view begins (not before the window's ``origin``). Positional, as the
    struct's fields are ordered: a tick makes three of these per changed component."""
    # an empty view of a window older than it covers its whole length
    span = max(now - start, res) if start == origin or any(vec[:_LS]) else float(seconds)
    processed, errors, lc = int(vec[_P]), int(vec[_E]), int(vec[_LC])
    done = processed + errors
    return WindowStats(
        seconds,
        span,
        processed,
        errors,
        int(vec[_M]),
        int(vec[_B]),
        lc,
        # running float sums leave residue (~1e-17) once everything has left the view
        float(vec[_LS]) if lc else 0.0,
        processed / span,
        vec[_M] / span,
        errors / done if done else 0.0,
        *q,
    )


def _restat(
    seconds: ViewSeconds, now: float, res: float, origin: float, start: float, v: WindowStats
) -> WindowStats:
    """``v`` (a view read when its slots held what they hold now) as of ``now``: its
    span and rates worked out as ``_stats`` does, the rest as it was."""
    processed = v.processed
    if start == origin or processed or v.errors or v.messages or v.bytes or v.latency_count:
        span = now - start
        if span < res:
            span = res
    else:
        span = float(seconds)
    if span == v.span_seconds:
        return v
    return WindowStats(
        seconds,
        span,
        processed,
        v.errors,
        v.messages,
        v.bytes,
        v.latency_count,
        v.latency_sum,
        processed / span,
        v.messages / span,
        v.error_rate,
        v.p50,
        v.p95,
        v.p99,
    )


Views = tuple[int, WindowStats, WindowStats, WindowStats]
"""``RollingWindow.read_views``: what the window had taken in (a count that moves with
every change to a view's contents), then its 10 s, 60 s and 300 s views."""


_ZERO: Final = (0, 0, 0, 0, 0, 0.0)
_W: Final = len(_ZERO)  # counters per vector
# Where each running vector starts in a window's one list of them (``_s``): the slot in
# progress, the 10 s, 60 s and 300 s views' completed slots, the coarse slot in
# progress, the lifetime totals. The slot in progress comes first, so the folds index
# it with the counters' own indexes.
_CUR, _V10, _V60, _V300, _CC, _TOT = range(0, 6 * _W, _W)
# Where each running histogram sum starts in ``_hs``, in histograms: the 10 s, 60 s and
# 300 s views', the coarse slot in progress, the lifetime totals.
_H10, _H60, _H300, _HCC, _HTOT = range(5)


def _add(s: _Vec, at: int, v: Sequence[float]) -> None:
    """Add the six counters ``v`` into the vector at ``s[at]`` (``v`` may be read from
    ``s`` itself: the map is taken whole before the slice is written)."""
    s[at : at + _W] = map(add, s[at : at + _W], v)


def _sub(s: _Vec, at: int, v: Sequence[float]) -> None:
    """Subtract the six counters ``v`` from the vector at ``s[at]``."""
    s[at : at + _W] = map(sub, s[at : at + _W], v)


@lru_cache(maxsize=16)
def _zero_counts(n: int) -> tuple[int, ...]:
    """``n`` zero counts to write over a slot histogram in place (one per ladder size)."""
    return (0,) * n


def _zeros(n: int) -> array[int]:
    """``n`` zero counts in the narrowest type: a ring widens when a count needs it."""
    return array("B", bytes(n))


def _put(ring: array[int], at: int, values: Sequence[int]) -> array[int]:
    """``ring`` with ``values`` written from ``at``, widened (``B`` → ``H`` → ``I`` →
    ``Q``) when one of them does not fit its type; the caller keeps what it returns.

    Why narrow types: a window holds ninety slots of a histogram each, and most
    components count fewer than 256 items per bucket and second, so a byte per count
    keeps a component with traffic in every slot at a few kilobytes, while a busy one
    widens its own rings only."""
    while True:
        try:
            ring[at : at + len(values)] = array(ring.typecode, values)
            return ring
        except OverflowError:
            ring = array(_WIDER[ring.typecode], ring)


_WIDER: Final = {"B": "H", "H": "I", "I": "Q"}
# Shared, never written to: a ring is replaced by a real one before its first write.
_EMPTY_RING: Final = array("B")
_EMPTY_SUMS: Final = array("d")
_EMPTY_HSUMS: Final = array("q")
# A slot's flag in its ring: nothing in it, counts only, counts and a histogram.
_EMPTY, _COUNTS, _TIMED = 0, 1, 2
_NCOUNTS: Final = 5  # the integer counters of a slot: processed … latency count


# Extremes of a slot that timed nothing: neutral in a min / max over slots. A slot timed
# without known extremes holds (-inf, +inf) instead, which leaves its views unclamped.
_NONE_LO: Final = math.inf
_NONE_HI: Final = -math.inf
_F32_MAX: Final = 3.4028234663852886e38
_F32_TINY: Final = 2.0**-149  # the smallest float32 above zero


def _extremes_ring(n: int) -> array[float]:
    """A ring's extremes, float32: the ``n`` slots' minimums, then their ``n`` maximums."""
    return array("f", [_NONE_LO] * n + [_NONE_HI] * n)


def _f32_toward(x: float, up: bool) -> float:
    """``x`` rounded to a float32 at or above it (``up``) or at or below it.

    Why directed: a slot's extremes are kept in float32 (four bytes each, ninety slots
    per window), and nearest rounding could move a minimum just above its value and past
    the upper bound of the bucket it is in, so that the clamp would read outside that
    bucket. Rounded outward, a stored minimum is at or below every value of its slot and
    a stored maximum at or above, so the clamp range holds every observed value of the
    bucket and, intersected with the bucket, never leaves it; widening by at most two
    float32 steps (~1.2e-7 relative) costs nothing a bucket of ~41 % width would show.
    """
    return _put_toward(array("f", (0.0,)), 0, x, up)


def _put_toward(ring: array[float], at: int, x: float, up: bool) -> float:
    """Write ``x`` at ``ring[at]`` (float32) rounded as ``_f32_toward`` rounds it; returns
    what was stored. The ring's own assignment rounds to nearest, read back to see which
    way it went: a slot completing costs no temporary array."""
    ring[at] = x  # nearest; beyond float32's range it is an infinity
    y = ring[at]
    if up:
        if y < x:
            ring[at] = -_F32_MAX if y == -math.inf else y + max(abs(y) * 2.0**-23, _F32_TINY)
    elif y > x:
        ring[at] = _F32_MAX if y == math.inf else y - max(abs(y) * 2.0**-23, _F32_TINY)
    return ring[at]


def _widen(vx: array[float], k: int, lo: float, hi: float) -> None:
    """A slot with extremes ``lo``, ``hi`` joins the view whose running extremes are at
    ``vx[k]``, ``vx[k + 1]`` (one that is NaN stays so: the scan that finds it sees the
    slot; NaN compares false)."""
    if lo < vx[k]:
        vx[k] = lo
    if hi > vx[k + 1]:
        vx[k + 1] = hi


def _forget(vx: array[float], k: int, lo: float, hi: float) -> None:
    """A slot with extremes ``lo``, ``hi`` leaves that view: an extreme it held is no
    longer known without a scan (NaN until then)."""
    if vx[k] == lo:
        vx[k] = math.nan
    if vx[k + 1] == hi:
        vx[k + 1] = math.nan


class RollingWindow:
    """Counts, errors, stream messages, bytes and latencies over rolling 10/60/300 s views.

    The clock is the caller's: every method takes ``now`` (``time.monotonic()`` seconds),
    so tests drive it by hand and one clock read serves many windows.

    ``bounds`` are the latency buckets' upper bounds (``LATENCY_BOUNDS`` unless the
    aggregator's ladder has more); every histogram folded in has one count per bound and
    one for ``+Inf``.

    Completed slots live in flat arrays, one per ring and kind (integer counters,
    latency sums, histograms), with a flag per slot; only the slot in progress and the
    views' running sums are Python objects. That keeps a window with traffic in every
    slot near 10 KB where a list per slot cost 57 KB. The extremes the quantiles are
    clamped to take one float32 array per ring (each slot's minimum, then each slot's
    maximum: 720 bytes a window), made when the first timed slot completes.

    The running vectors (the slot in progress, each view's, the coarse slot's, the
    lifetime totals) are one list (``_s``) and the running histogram sums one array
    (``_hs``), not one object each: a full garbage collection walks every container a
    window holds, at every component, and while it walks the event loop waits.
    """

    __slots__ = (
        "_bounds",
        "_cchi",
        "_cclo",
        "_cct",
        "_ch",
        "_cn",
        "_co",
        "_cs",
        "_curh",
        "_curhi",
        "_curlo",
        "_cx",
        "_fh",
        "_fn",
        "_fo",
        "_fs",
        "_fx",
        "_hs",
        "_moves",
        "_nb",
        "_res",
        "_s",
        "_spare",
        "_start",
        "_tick",
        "_vx",
    )

    def __init__(
        self, now: float, resolution: float = 1.0, bounds: Sequence[float] = LATENCY_BOUNDS
    ) -> None:
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0, got {resolution!r}")
        self._res = resolution
        self._bounds = bounds
        self._nb = len(bounds) + 1
        self._start = now
        self._tick = int(now // resolution)
        # Fine (one-second) and coarse (ten-second) rings: flags, counters, sums, histograms.
        self._fo = bytearray(_FINE)
        # Allocated when the first slot with something in it completes (the histograms
        # when the first timed one does): a stream's window never times anything, and a
        # name seen once should not cost ninety slots.
        self._fn: array[int] = _EMPTY_RING
        self._fs: array[float] = _EMPTY_SUMS
        self._fh: array[int] = _EMPTY_RING
        self._co = bytearray(_COARSE)
        self._cn: array[int] = _EMPTY_RING
        self._cs: array[float] = _EMPTY_SUMS
        self._ch: array[int] = _EMPTY_RING
        self._fx: array[float] = _EMPTY_SUMS  # extremes of the timed slots of each ring
        self._cx: array[float] = _EMPTY_SUMS
        # The running vectors, at _CUR, _V10, _V60, _V300, _CC and _TOT.
        self._s: _Vec = list(_ZERO * 6)
        self._curh: _Hist | None = None
        # The slot histogram, kept here (zeroed) when its slot completes, until the next
        # timed slot takes it up again: a new list every second for every busy
        # component would be a new container for the garbage collector to walk, while
        # this one is made once and frozen with the rest of the window.
        self._spare: _Hist | None = None
        # Smallest and largest latency of the slot in progress (exact) and of the coarse
        # slot in progress (of its completed seconds, as stored: float32).
        self._curlo, self._curhi = _NONE_LO, _NONE_HI
        self._cclo, self._cchi = _NONE_LO, _NONE_HI
        # The views' extremes over their completed slots (10 s lo, hi, 60 s, 300 s), kept
        # as a slot completes, NaN once the slot that held one left (found again by a
        # scan of the ring at the next read): a read then rarely walks ninety slots.
        # Float32 like the rings they come from, so they hold those values exactly.
        self._vx: array[float] = _EMPTY_SUMS
        # The running histogram sums, histogram _H10, _H60, _H300, _HCC and _HTOT of
        # it; made when the first timed slot completes (all zeros reads as nothing
        # timed). Whether the coarse slot in progress timed anything:
        self._hs: array[int] = _EMPTY_HSUMS
        self._cct = False
        # Counts what changed a view's contents (a fold, a timed or counted slot
        # completing, a slot leaving a view): while it stands still, the views read the
        # same but for what moves with the clock (``read_views``).
        self._moves = 0

    @property
    def bounds(self) -> Sequence[float]:
        """The latency buckets' upper bounds (``+Inf`` after the last)."""
        return self._bounds

    # -- folding -------------------------------------------------------------------------

    def add(
        self,
        now: float,
        processed: int = 0,
        errors: int = 0,
        messages: int = 0,
        nbytes: int = 0,
        latency: float | None = None,
    ) -> None:
        """Fold one event (or a pre-counted delta without latencies)."""
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        self._moves += 1
        cur = self._s  # the slot in progress is its first vector
        cur[_P] += processed
        cur[_E] += errors
        cur[_M] += messages
        cur[_B] += nbytes
        if latency is not None:
            h = self._curh
            if h is None:
                h = self._curh = self._slot_histogram()
            h[bisect_left(self._bounds, latency)] += 1
            cur[_LC] += 1
            cur[_LS] += latency
            if latency < self._curlo:
                self._curlo = latency
            if latency > self._curhi:
                self._curhi = latency

    def add_histogram(
        self,
        now: float,
        counts: Sequence[int],
        latency_sum: float,
        lowest: float | None = None,
        highest: float | None = None,
    ) -> None:
        """Fold a pre-bucketed latency histogram (a probe's delta): one count per bound
        and one for ``+Inf``. ``lowest``/``highest``: its smallest and largest latency
        if known; without them the quantiles of every view that holds this slot are
        interpolated across whole buckets, unclamped."""
        if len(counts) != self._nb:
            raise ValueError(f"expected {self._nb} bucket counts, got {len(counts)}")
        self.add_counts(now, 0, counts, latency_sum, lowest, highest)

    def add_counts(
        self,
        now: float,
        first: int,
        counts: Sequence[int],
        latency_sum: float,
        lowest: float | None = None,
        highest: float | None = None,
    ) -> None:
        """Fold latencies already bucketed from bucket ``first`` on (``counts[j]`` in
        bucket ``first + j``, as ``buckets.bucket_latencies`` gives them): a batch's
        latencies in one slice addition, however many they are. ``lowest``/``highest``
        as for ``add_histogram``."""
        end = first + len(counts)
        if first < 0 or end > self._nb:
            raise ValueError(f"buckets {first}..{end - 1} are not within 0..{self._nb - 1}")
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        h = self._curh
        if h is None:
            h = self._curh = self._slot_histogram()
        h[first:end] = map(add, h[first:end], counts)
        self._moves += 1
        n = sum(counts)
        self._s[_LC] += n
        self._s[_LS] += latency_sum
        if n:
            self._extend(lowest, highest)

    def _extend(self, lowest: float | None, highest: float | None) -> None:
        """The slot in progress holds latencies from ``lowest`` to ``highest`` too (None:
        not known, which leaves the views holding this slot unclamped on that side)."""
        lo = -math.inf if lowest is None else lowest
        hi = math.inf if highest is None else highest
        if lo < self._curlo:
            self._curlo = lo
        if hi > self._curhi:
            self._curhi = hi

    def add_bucket(self, now: float, index: int, latency_sum: float) -> None:
        """Fold one latency already placed in bucket ``index`` (``bucket_index``):
        ``latency_sum`` is that latency."""
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        h = self._curh
        if h is None:
            h = self._curh = self._slot_histogram()
        h[index] += 1
        self._moves += 1
        self._s[_LC] += 1
        self._s[_LS] += latency_sum
        if latency_sum < self._curlo:
            self._curlo = latency_sum
        if latency_sum > self._curhi:
            self._curhi = latency_sum

    # -- time ------------------------------------------------------------------------------

    def _advance(self, tick: int) -> None:
        if tick - self._tick > _FINE + _COARSE * _PER_COARSE:
            self._rotate()  # keep the slot in progress in the lifetime totals
            self._reset(tick)
            return
        while self._tick < tick:
            self._rotate()

    def _reset(self, tick: int) -> None:
        self._tick = tick
        self._moves += 1
        self._fo = bytearray(_FINE)
        self._co = bytearray(_COARSE)
        self._s[_V10:_TOT] = _ZERO * 4  # the views and the coarse slot; totals stay
        if self._hs:
            self._hs[: _HTOT * self._nb] = array("q", bytes(8 * _HTOT * self._nb))
        self._cct = False
        self._fx = self._cx = _EMPTY_SUMS
        self._cclo, self._cchi = _NONE_LO, _NONE_HI
        self._vx = _EMPTY_SUMS

    def _take_out(
        self,
        flag: int,
        counts: array[int],
        sums: array[float],
        hists: array[int],
        i: int,
        view: int,
        hview: int,
    ) -> None:
        """Subtract slot ``i`` of a ring (its ``flag`` set) from the running vector at
        ``view`` and, if it was timed, from the running histogram ``hview``."""
        at = i * _NCOUNTS
        self._moves += 1
        _sub(self._s, view, [*counts[at : at + _NCOUNTS], sums[i]])
        if flag == _TIMED:
            nb = self._nb
            self._hsum(hview, hists[i * nb : (i + 1) * nb], sub)

    def _hsum(self, k: int, h: Sequence[int], op: Callable[[int, int], int]) -> None:
        """Running histogram ``k`` ``op`` (add or subtract) ``h``, written in place.

        In place, not a new array: these sums live as long as their window, and a new one
        per slot and view would be new long-lived objects every second for every busy
        component, each one more for the garbage collector to carry into its oldest
        generation (and a sooner, longer full collection)."""
        hs, nb = self._hs, self._nb
        if not hs:
            hs = self._hs = array("q", bytes(8 * (_HTOT + 1) * nb))
        at = k * nb
        hs[at : at + nb] = array("q", map(op, hs[at : at + nb], h))

    def _slot_histogram(self) -> _Hist:
        """The zeroed histogram a slot in progress counts in once it times something:
        the window's one, made at the first timed slot (a window that never times
        anything holds none)."""
        h = self._spare
        if h is None:
            return [0] * self._nb
        self._spare = None  # one slot holds it at a time (one reference, not two)
        return h

    def _hist(self, k: int) -> array[int] | None:
        """Running histogram ``k`` (a copy), None while nothing was ever timed."""
        hs, nb = self._hs, self._nb
        return hs[k * nb : (k + 1) * nb] if hs else None

    def _hists(self, seconds: ViewSeconds) -> tuple[Sequence[int] | None, ...]:
        """The histograms whose sum is a view's: the slot in progress, the view's
        completed slots and, for 300 s, the coarse slot in progress."""
        if seconds == 300:
            return self._curh, self._hist(_H300), self._hist(_HCC)
        return self._curh, self._hist(_H10 if seconds == 10 else _H60)

    def _rotate(self) -> None:
        """Complete the slot in progress and open the next one."""
        t = self._tick
        t1 = t + 1
        nb = self._nb
        s, curh = self._s, self._curh
        cur = s[:_W]
        fo = self._fo
        i = t % _FINE
        if curh is not None or any(cur):
            # the views' sums read the same (the slot moves from one addend to another),
            # but a timed slot's extremes are stored rounded outward to float32
            self._moves += 1
            _add(s, _V10, cur)
            _add(s, _V60, cur)
            _add(s, _CC, cur)
            _add(s, _TOT, cur)
            if not self._fn:
                self._fn, self._fs = _zeros(_FINE * _NCOUNTS), array("d", bytes(8 * _FINE))
            self._fn = _put(self._fn, i * _NCOUNTS, [int(x) for x in cur[:_NCOUNTS]])
            self._fs[i] = cur[_LS]
            fo[i] = _COUNTS
            if curh is not None:
                self._hsum(_H10, curh, add)
                self._hsum(_H60, curh, add)
                self._hsum(_HCC, curh, add)
                self._hsum(_HTOT, curh, add)
                self._cct = True
                if not self._fh:
                    self._fh = _zeros(_FINE * nb)
                self._fh = _put(self._fh, i * nb, curh)
                fo[i] = _TIMED
                lo, hi = self._curlo, self._curhi
                if not self._fx:
                    self._fx = _extremes_ring(_FINE)
                    self._vx = array("f", (_NONE_LO, _NONE_HI) * 3)
                slo = _put_toward(self._fx, i, lo, False)
                shi = _put_toward(self._fx, _FINE + i, hi, True)
                _widen(self._vx, 0, slo, shi)
                _widen(self._vx, 2, slo, shi)
                # the stored (float32) extremes, as the 10 s and 60 s views read them: a
                # 300 s view with the latencies of a shorter one has its extremes too
                if slo < self._cclo:
                    self._cclo = slo
                if shi > self._cchi:
                    self._cchi = shi
                self._curlo, self._curhi = _NONE_LO, _NONE_HI
            s[:_W] = _ZERO  # in place, as _hsum: the slot's vector lives on
            if curh is not None:
                curh[:] = _zero_counts(nb)  # in place too: the next timed slot takes it
                self._curh, self._spare = None, curh
        else:
            fo[i] = _EMPTY
        fn, fs, fh = self._fn, self._fs, self._fh
        j = (t1 - 10) % _FINE
        if fo[j]:  # leaves the 10 s view
            self._take_out(fo[j], fn, fs, fh, j, _V10, _H10)
            if fo[j] == _TIMED:
                _forget(self._vx, 0, self._fx[j], self._fx[_FINE + j])
        j = t1 % _FINE
        if fo[j]:  # leaves the 60 s view, and the ring
            self._take_out(fo[j], fn, fs, fh, j, _V60, _H60)
            if fo[j] == _TIMED:  # its extremes go with it (a scan reads the whole ring)
                _forget(self._vx, 2, self._fx[j], self._fx[_FINE + j])
                self._fx[j], self._fx[_FINE + j] = _NONE_LO, _NONE_HI
            fo[j] = _EMPTY
        if t1 % _PER_COARSE == 0:
            self._close_coarse(t1 // _PER_COARSE)
        self._tick = t1

    def _close_coarse(self, period: int) -> None:
        """Enter ten-second ``period``: the one before completes, the one 30 back leaves."""
        co = self._co
        j = period % _COARSE
        if co[j]:
            self._take_out(co[j], self._cn, self._cs, self._ch, j, _V300, _H300)
            if co[j] == _TIMED:
                _forget(self._vx, 4, self._cx[j], self._cx[_COARSE + j])
                self._cx[j], self._cx[_COARSE + j] = _NONE_LO, _NONE_HI
            co[j] = _EMPTY
        s = self._s
        cc = s[_CC : _CC + _W]
        if self._cct or any(cc):
            i = (period - 1) % _COARSE
            _add(s, _V300, cc)
            if not self._cn:
                self._cn, self._cs = _zeros(_COARSE * _NCOUNTS), array("d", bytes(8 * _COARSE))
            self._cn = _put(self._cn, i * _NCOUNTS, [int(x) for x in cc[:_NCOUNTS]])
            self._cs[i] = cc[_LS]
            co[i] = _COUNTS
            cch = self._hist(_HCC)
            if self._cct and cch is not None:
                self._hsum(_H300, cch, add)
                if not self._ch:
                    self._ch = _zeros(_COARSE * self._nb)
                self._ch = _put(self._ch, i * self._nb, cch)
                self._hsum(_HCC, cch, sub)  # zero again: the next coarse slot begins
                co[i] = _TIMED
                if not self._cx:
                    self._cx = _extremes_ring(_COARSE)
                slo = _put_toward(self._cx, i, self._cclo, False)
                shi = _put_toward(self._cx, _COARSE + i, self._cchi, True)
                _widen(self._vx, 4, slo, shi)
                self._cclo, self._cchi = _NONE_LO, _NONE_HI
            s[_CC : _CC + _W] = _ZERO
            self._cct = False

    # -- reading ---------------------------------------------------------------------------

    def view(self, now: float, seconds: ViewSeconds = 60) -> WindowStats:
        """The figures of the last ``seconds`` (10, 60 or 300) as of ``now``."""
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        return self._view(now, seconds, None)

    def read_views(self, now: float, last: Views | None = None) -> Views:
        """``views`` as of ``now``, tagged with what the window had taken in by then.

        ``last``: what this call gave before (a reader that keeps it, as an aggregator
        keeps each component's). When nothing entered or left any view since, its
        counts, latency sums, quantiles and extremes are those of ``last``, and only what
        moves with the clock is worked out again: each view's span and the rates over
        it. That is what a tick pays for most components of a large endpoint, whose
        reports are seconds apart while their figures are read every second; the
        result is what ``views`` would give, to the last bit."""
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        moves = self._moves
        if last is None or last[0] != moves:
            return (moves, *self.views(now))
        t, res, origin = self._tick, self._res, self._start
        s10, s60 = (t - 9) * res, (t - (_FINE - 1)) * res
        s300 = (t // _PER_COARSE - (_COARSE - 1)) * _PER_COARSE * res
        return (
            moves,
            _restat(10, now, res, origin, s10 if s10 > origin else origin, last[1]),
            _restat(60, now, res, origin, s60 if s60 > origin else origin, last[2]),
            _restat(300, now, res, origin, s300 if s300 > origin else origin, last[3]),
        )

    def views(self, now: float) -> tuple[WindowStats, WindowStats, WindowStats]:
        """The 10 s, 60 s and 300 s views as of ``now``, as ``view`` reads each.

        One pass for the three (a tick reads them for every component that changed):
        the running sums are added once each, and the quantiles of a view are worked
        out once for views that hold the same latencies: each view's slots include the
        shorter one's, and counts are never negative, so a longer view with the same
        latency count has the same histogram (and the same extremes: the extra slots are
        untimed), so a component whose latencies are all recent, or that timed nothing,
        costs one quantile computation instead of three."""
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        s, curh, bounds = self._s, self._curh, self._bounds
        cur = s[:_W]
        v10 = list(map(add, cur, s[_V10:_V60]))
        v60 = list(map(add, cur, s[_V60:_V300]))
        v300 = list(map(add, map(add, cur, s[_V300:_CC]), s[_CC:_TOT]))
        lc10, lc60 = v10[_LC], v60[_LC]
        q10: _Quantiles = _NO_QUANTILES
        if lc10:
            lo, hi = self._extremes(10)
            q10 = _quantiles3((curh, self._hist(_H10)), bounds, lo, hi)
        q60 = q10
        if lc60 != lc10:
            lo, hi = self._extremes(60)
            q60 = _quantiles3((curh, self._hist(_H60)), bounds, lo, hi)
        q300 = q60
        if v300[_LC] != lc60:
            lo, hi = self._extremes(300)
            q300 = _quantiles3(self._hists(300), bounds, lo, hi)
        t, res, origin = self._tick, self._res, self._start
        coarse = (t // _PER_COARSE - (_COARSE - 1)) * _PER_COARSE
        return (
            _stats(10, now, res, origin, max((t - 9) * res, origin), v10, q10),
            _stats(60, now, res, origin, max((t - (_FINE - 1)) * res, origin), v60, q60),
            _stats(300, now, res, origin, max(coarse * res, origin), v300, q300),
        )

    def _view(self, now: float, seconds: ViewSeconds, shorter: WindowStats | None) -> WindowStats:
        """``view`` once the window is advanced to ``now``; ``shorter``: the view just
        shorter than this one, whose quantiles are this one's if its latency count is."""
        s = self._s
        cur = s[:_W]
        if seconds == 10:
            vec = list(map(add, cur, s[_V10:_V60]))
            first = self._tick - 9
        elif seconds == 60:
            vec = list(map(add, cur, s[_V60:_V300]))
            first = self._tick - (_FINE - 1)
        elif seconds == 300:
            vec = list(map(add, map(add, cur, s[_V300:_CC]), s[_CC:_TOT]))
            first = (self._tick // _PER_COARSE - (_COARSE - 1)) * _PER_COARSE
        else:
            raise ValueError(f"a window view is 10, 60 or 300 seconds, got {seconds!r}")
        q: _Quantiles
        if shorter is not None and shorter.latency_count == vec[_LC]:
            # the same latencies, so the same extremes too: the extra slots are untimed
            q = shorter.p50, shorter.p95, shorter.p99
        elif vec[_LC]:
            lo, hi = self._extremes(seconds)
            q = _quantiles3(self._hists(seconds), self._bounds, lo, hi)
        else:
            q = _NO_QUANTILES
        origin = self._start
        return _stats(seconds, now, self._res, origin, max(first * self._res, origin), vec, q)

    def _extremes(self, seconds: ViewSeconds) -> tuple[float, float]:
        """The smallest and largest latency of a view (advanced to now): its slots in
        progress and its completed timed slots."""
        lo, hi = self._curlo, self._curhi
        if seconds == 300:
            lo, hi = min(lo, self._cclo), max(hi, self._cchi)
        vx = self._vx
        if not vx:
            return lo, hi
        k = 0 if seconds == 10 else 2 if seconds == 60 else 4
        slo, shi = vx[k], vx[k + 1]
        if slo != slo or shi != shi:  # NaN: the slot that held one left
            slo, shi = vx[k], vx[k + 1] = self._scan(seconds)
        return min(lo, slo), max(hi, shi)

    def _scan(self, seconds: ViewSeconds) -> tuple[float, float]:
        """The extremes of a view's completed slots, read from its ring. A slot that
        left a view of a ring's whole length was reset to neutral when it left, so those
        views read the whole ring; the 10 s view reads its nine completed slots."""
        if seconds == 300:
            x, n = self._cx, _COARSE
            return (min(x[:n]), max(x[n:])) if x else (_NONE_LO, _NONE_HI)
        x = self._fx
        if seconds == 60:
            return min(x[:_FINE]), max(x[_FINE:])
        a, b = (self._tick - 9) % _FINE, self._tick % _FINE  # slots a .. b - 1, wrapping
        if a < b:
            return min(x[a:b]), max(x[_FINE + a : _FINE + b])
        return (
            min(min(x[a:_FINE]), min(x[:b], default=_NONE_LO)),
            max(max(x[_FINE + a :]), max(x[_FINE : _FINE + b], default=_NONE_HI)),
        )

    def idle(self, now: float) -> bool:
        """Nothing in any view as of ``now``, and the window older than its longest view:
        its views then read the same until something is added (what lets a reader keep
        the figures of a quiet component instead of reading them again every tick)."""
        tick = int(now // self._res)
        if tick > self._tick:
            self._advance(tick)
        first = (self._tick // _PER_COARSE - (_COARSE - 1)) * _PER_COARSE
        if first * self._res <= self._start:
            return False
        s = self._s
        return not (any(s[:_LS]) or any(s[_V300 : _V300 + _LS]) or any(s[_CC : _CC + _LS]))

    def totals(self) -> tuple[int, int, int, int, int, float]:
        """Lifetime (processed, errors, messages, bytes, latency_count, latency_sum)."""
        c = self._s
        t = c[_TOT:]
        return (
            int(t[_P] + c[_P]),
            int(t[_E] + c[_E]),
            int(t[_M] + c[_M]),
            int(t[_B] + c[_B]),
            int(t[_LC] + c[_LC]),
            float(t[_LS] + c[_LS]),
        )

    def total_counts(self) -> Iterable[int]:
        """``total_histogram``'s counts as an iterable read once: what an export sums
        without keeping (a tick exports every changed component's)."""
        tot, cur = self._hist(_HTOT), self._curh
        if tot is None:
            return cur if cur is not None else repeat(0, self._nb)
        return tot if cur is None else map(add, tot, cur)

    def total_histogram(self) -> list[int]:
        """Lifetime latency bucket counts (not cumulative), for Prometheus histograms."""
        tot, cur = self._hist(_HTOT), self._curh
        if tot is None:
            return list(cur) if cur is not None else [0] * self._nb
        if cur is None:
            return list(tot)
        return list(map(add, tot, cur))
