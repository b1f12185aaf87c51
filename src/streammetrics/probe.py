"""The hot path: a component counts what it does in plain ints, and a flush hands the
counts over as one ``Delta``.

A probe never blocks: ``processed()`` is an int add and, with a latency, one list append.
The latencies are bucketed in bulk (``buckets.bucket_latencies``: one sort and one bisect
per bound, not one bisect per latency) when a few hundred have gathered and at the flush,
so what a probe holds between flushes is bounded and a latency costs the instrumented
code an append. Whoever listens (the event bus) calls ``flush()`` on its own tick, so the
cost of aggregation is per flush, not per item. While nothing listens (``timing`` is off:
the bus has no sink) ``time()`` and ``timed`` read no clock and keep no histogram, only
the counts, so instrumented code costs next to nothing where no endpoint runs and loses
no count if one starts later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from functools import wraps
from inspect import iscoroutinefunction
from operator import add
from types import TracebackType
from typing import Any, Final, Literal, ParamSpec, Protocol, TypeVar, cast

from .buckets import DEFAULT_LADDER, bucket_latencies, bucketed_extremes
from .model.events import Delta

__all__ = ("Outcomes", "Probe")

P = ParamSpec("P")


class Outcomes(Protocol):
    """What watches a probe's outcomes (a ``CircuitBreaker``)."""

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...


R = TypeVar("R")

#: Latencies a probe gathers before it buckets them (``Probe._bucket``): enough that the
#: sort and one bisect per bound cost less than a bisect each, few enough that a busy
#: probe holds a few KB between flushes, not everything timed since the last one.
_GATHER: Final = 256


class Probe:
    """Local counters of one component, flushed as ``Delta``s."""

    __slots__ = (
        "_b",
        "_bounds",
        "_c",
        "_counter",
        "_e",
        "_h",
        "_hi",
        "_last_error",
        "_lat",
        "_lo",
        "_ls",
        "_nb",
        "_p",
        "_streams",
        "breaker",
        "component",
        "timing",
    )

    def __init__(
        self,
        component: str,
        *,
        timing: bool = True,
        bounds: Sequence[float] = DEFAULT_LADDER.bounds,
    ) -> None:
        """``bounds``: the latency buckets' upper bounds (the bus's ``Ladder``), which the
        aggregators this probe's deltas reach count in."""
        self.component = component
        self._bounds = bounds
        self._nb = len(bounds) + 1
        #: Measure latencies in ``time()`` / ``timed``; the bus turns it off while no
        #: sink listens (counts are kept either way).
        self.timing = timing
        self._counter = _Counter(self)  # stateless: one per probe serves every block
        self._p = 0
        self._e = 0
        self._b = 0
        self._c = 0
        self._ls = 0.0
        self._h: list[int] | None = None
        # Latencies timed since they were last bucketed into _h (at most _GATHER).
        self._lat: list[float] = []
        # The smallest and largest latency since the flush, which clamp the quantiles'
        # interpolation inside a bucket (kept as each gathering is bucketed).
        self._lo = math.inf
        self._hi = -math.inf
        self._last_error: str | None = None
        self._streams: dict[str, list[int]] = {}
        #: A circuit breaker that sees every outcome the probe counts (set by the harness).
        self.breaker: Outcomes | None = None

    def processed(self, n: int = 1, latency: float | None = None, nbytes: int = 0) -> None:
        """Count ``n`` items done; ``latency`` (seconds) is one observation for the batch."""
        self._p += n
        if self.breaker is not None:
            self.breaker.record_success()
        if nbytes:
            self._b += nbytes
        if latency is not None:
            # Here and in error(), not in a helper both call: on the instrumented code's
            # own path one more call costs about as much as the rest of processed().
            lat = self._lat
            lat.append(latency)
            if len(lat) >= _GATHER:
                self._bucket()

    def error(self, n: int = 1, detail: str | None = None, latency: float | None = None) -> None:
        """Count ``n`` failed items; ``detail`` is kept as the component's last error."""
        self._e += n
        if self.breaker is not None:
            self.breaker.record_failure()
        if detail is not None:
            self._last_error = detail
        if latency is not None:
            lat = self._lat
            lat.append(latency)
            if len(lat) >= _GATHER:
                self._bucket()

    def client_error(self, n: int = 1) -> None:
        """Count ``n`` requests refused as their client's fault (a malformed body, a
        4xx answer): kept apart from ``error()``, so they neither lower the component's
        health nor trip its breaker, as a server-side failure does."""
        self._c += n

    def message(self, stream: str, n: int = 1, nbytes: int = 0) -> None:
        """Count ``n`` messages sent on ``stream`` (a binding)."""
        s = self._streams.get(stream)
        if s is None:
            s = self._streams[stream] = [0, 0]
        s[0] += n
        s[1] += nbytes

    def time(self) -> AbstractContextManager[None]:
        """Time a block: a clean exit counts one processed item, an exception one error.

        Cancellation (and other ``BaseException``s) is not the item's failure: it passes
        through uncounted, so a shutdown does not show up as errors."""
        return _Timer(self) if self.timing else self._counter

    def timed(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so each call is timed like ``time()``."""
        if iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @wraps(fn)
            async def arun(*args: P.args, **kwargs: P.kwargs) -> Any:
                t0 = time.perf_counter() if self.timing else None
                try:
                    out = await afn(*args, **kwargs)
                except Exception as exc:
                    self._failed(exc, t0)
                    raise
                self.processed(latency=None if t0 is None else time.perf_counter() - t0)
                return out

            return cast(Callable[P, R], arun)

        @wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            t0 = time.perf_counter() if self.timing else None
            try:
                out = fn(*args, **kwargs)
            except Exception as exc:
                self._failed(exc, t0)
                raise
            self.processed(latency=None if t0 is None else time.perf_counter() - t0)
            return out

        return run

    def _failed(self, exc: Exception, t0: float | None) -> None:
        latency = None if t0 is None else time.perf_counter() - t0
        self.error(detail=f"{type(exc).__name__}: {exc}", latency=latency)

    def _bucket(self) -> None:
        """Fold the gathered latencies into the histogram, the sum and the extremes.

        The sum is added from the running sum in the order the latencies came. A NaN
        (which user code may pass) falls in the first bucket, as ``bisect_left`` places
        it, and is no extreme: it compares with nothing, as it did one by one.
        """
        lat = self._lat
        self._lat = []
        self._ls = sum(lat, self._ls)
        first, counts, total = bucket_latencies(lat, self._bounds)
        h = self._h
        if h is None:
            h = self._h = [0] * self._nb
        end = first + len(counts)
        h[first:end] = map(add, h[first:end], counts)
        lo, hi = bucketed_extremes(lat, total)
        if lo < self._lo:
            self._lo = lo
        if hi > self._hi:
            self._hi = hi

    def flush(self) -> list[Delta]:
        """Hand over what was counted since the last flush, and start again from zero."""
        if self._lat:
            self._bucket()
        out: list[Delta] = []
        if self._p or self._e or self._h is not None or self._b or self._c:
            out.append(
                Delta(
                    self.component,
                    processed=self._p,
                    errors=self._e,
                    bytes=self._b,
                    latency_counts=self._h,
                    latency_sum=self._ls,
                    latency_min=self._lo if self._h is not None else None,
                    latency_max=self._hi if self._h is not None else None,
                    last_error=self._last_error,
                    client_errors=self._c,
                )
            )
            self._p = self._e = self._b = self._c = 0
            self._ls = 0.0
            self._h = None
            self._lo = math.inf
            self._hi = -math.inf
            self._last_error = None
        if self._streams:
            for stream, (n, nb) in self._streams.items():
                out.append(Delta(self.component, messages=n, bytes=nb, stream=stream))
            self._streams = {}
        return out


class _Timer(AbstractContextManager[None]):
    """``Probe.time()`` while someone listens (a class: half the cost of a generator)."""

    __slots__ = ("_probe", "_t0")

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._t0 = 0.0

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        latency = time.perf_counter() - self._t0
        if et is None:
            self._probe.processed(latency=latency)
        elif isinstance(exc, Exception):
            self._probe.error(detail=f"{type(exc).__name__}: {exc}", latency=latency)
        return False


class _Counter(AbstractContextManager[None]):
    """``Probe.time()`` while nothing listens: the counts, no clock."""

    __slots__ = ("_probe",)

    def __init__(self, probe: Probe) -> None:
        self._probe = probe

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        p = self._probe
        if et is None:  # processed(), inlined: this is the path that must cost nothing
            p._p += 1
            if p.breaker is not None:
                p.breaker.record_success()
        elif isinstance(exc, Exception):
            p.error(detail=f"{type(exc).__name__}: {exc}")
        return False
