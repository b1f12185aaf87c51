"""``/metrics`` written straight from a ``Snapshot``, per-component text cached across ticks.

prometheus-client's ``generate_latest`` builds a ``Sample`` per series, then formats it:
at 10,000 components (some 570,000 samples) that is seconds of pure Python, holding the
GIL the whole time. ``ExpositionWriter`` writes the same text itself:

- the per-component and per-stream families (``SnapshotCollector``'s ``components``,
  ``latency``, ``breakers`` and ``streams`` sections) as f-strings, one block per family
  per component, cached: a block is reused while what it is made of is equal (the
  ``ComponentStatus``, the histogram's counts and sum, the ``BreakerStatus``, the
  ``StreamStatus``; msgspec Structs compare by value) and dropped when its component
  leaves the snapshot;
- the few global families (``system``, ``process``, ``bookkeeping``) and every other
  collector (custom, built-in) through prometheus-client's own writer, so they are its
  text by construction; HELP and TYPE lines come from the reference collector's
  families too.

``SnapshotCollector`` stays the reference: its families, in its order, under its names,
help texts and types; the tests parse both outputs and compare them sample by sample.

A render is also written as steps (``render_steps``, ``steps.py``) so that it can run on the
event loop, a fraction of a millisecond at a time (``RENDER_STEP_S``): in a worker thread it
held the GIL for hundreds of milliseconds, and the loop waited for the GIL at every switch.
Its body is an ``Exposition``, a sequence of pieces of at most ~256 KiB rather than one
bytes object: one join of a 10,000-component body (23 MB) is tens of milliseconds in a
single C call, most of it page faults on fresh memory, and nothing on the loop may take
that long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from operator import itemgetter
from time import perf_counter
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import msgspec
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..breaker import BREAKER_CODES
from ..buckets import LATENCY_BOUNDS
from ..steps import Steps, drop_steps, finish
from ..windows import VIEWS
from .collector import SECTIONS, SnapshotCollector, le_labels

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..snapshot import BreakerStatus, ComponentStatus, Latency, Snapshot, StreamStatus

__all__ = (
    "RENDER_STEP_S",
    "Exposition",
    "ExpositionStatistics",
    "ExpositionWriter",
    "escape_label_value",
    "go_float",
)

_WINDOWS: Final = tuple(f"{s}s" for s in VIEWS)
_EOF: Final = b"# EOF\n"

#: What the direct writer renders itself, family by family, in the reference's order.
_COMPONENT_FAMILIES: Final = (
    "component_health",
    "component_health_score",
    "component_items_processed",
    "component_errors",
    "component_client_errors",
    "component_items_per_second",
    "component_error_rate",
    *(f"component_latency_{q}_seconds" for q in ("p50", "p95", "p99")),
    *(f"component_span_latency_{q}_seconds" for q in ("p50", "p95", "p99")),
)
#: The sample names of the six quantile families, in their order.
_P50, _P95, _P99, _SPAN_P50, _SPAN_P95, _SPAN_P99 = _COMPONENT_FAMILIES[7:]
#: Each window's key in ``ComponentStatus.windows`` and what a line of it carries after
#: ``window="`` (the window, the end of the label set and the space before the value).
_WINDOW_ENDS: Final = tuple((w, f'{w}"}} ') for w in _WINDOWS)
_HISTOGRAM: Final = "component_latency_seconds"
_BREAKER_FAMILIES: Final = ("circuit_breaker_state", "circuit_breaker_failures")
_STREAM_FAMILIES: Final = (
    "stream_messages",
    "stream_message_rate",
    "stream_buffer_used",
    "stream_buffer_size",
)
_DIRECT_SECTIONS: Final = ("components", "latency", "breakers", "streams")
_DIRECT: Final = (*_COMPONENT_FAMILIES, _HISTOGRAM, *_BREAKER_FAMILIES, *_STREAM_FAMILIES)

#: Below this a number's spelling is Python's (Go switches to an exponent from 1e6 on
#: positive values, Python's repr from 1e16).
_INT_FAST: Final = 1_000_000
_INT_FAST_NEG: Final = -(10**15)
_INF: Final = float("inf")

RENDER_STEP_S: Final = 0.00025
"""Seconds of work between two yields of ``render_steps``: what a render holds the event loop
for at a time beside short work (beside longer steps of other work, as long as they took, up
to ``_SHARE_CAP_S``; a garbage collection that falls in a step comes on top)."""
#: The longest step a render takes to match the other work of the loop (``_Pace``): twice
#: the step, as the other walks yield as often (``steps.BUDGET_S``). At 50 ms
#: a render beside ten busy connections took steps as long as all their requests together,
#: and every request waited through one of them.
_SHARE_CAP_S: Final = 2 * RENDER_STEP_S
#: Float spellings a writer keeps from one render to the next (a few MB at most).
_SPELLINGS_KEPT: Final = 1 << 16
#: The size a piece of the body is aimed at: large enough that sending the pieces costs
#: few writes, small enough that each join is well under a millisecond.
_PIECE_BYTES: Final = 256 * 1024
#: Pieces smaller than this (headers, the global families) are merged into the next one.
_SMALL_BYTES: Final = 16 * 1024


def go_float(value: float) -> str:
    """``value`` as prometheus-client's ``floatToGoString`` spells it, faster for the ints
    and ordinary floats the snapshot is made of."""
    # Below 1e6 (and above -inf; NaN fails the test) Go's spelling is Python's repr for a
    # float, and an int's digits with ".0" (down to -1e15, where repr is still exact).
    if -_INF < value < _INT_FAST:
        cls = type(value)
        if cls is float:
            return repr(value)
        if cls is int and value > _INT_FAST_NEG:
            return f"{value}.0"
    out: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return out


class Exposition(msgspec.Struct, frozen=True, gc=False):
    """A rendered body: its pieces, in order, and their total length.

    Served piece by piece (with ``size`` as its Content-Length), never joined on the
    event loop; ``body()`` joins them for whoever wants one bytes object."""

    pieces: tuple[bytes, ...]
    size: int
    """``sum(len(p) for p in pieces)``: the Content-Length."""

    def body(self) -> bytes:
        return b"".join(self.pieces)


class _Body:
    """Collects the pieces of a body: small ones (headers, short families) are merged
    until they weigh ``_SMALL_BYTES``, so that it is sent in few writes."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    def add(self, piece: bytes) -> None:
        if not piece:
            return
        self.size += len(piece)
        self._pending.append(piece)
        self._pending_size += len(piece)
        if self._pending_size >= _SMALL_BYTES:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            self.pieces.append(pending[0] if len(pending) == 1 else b"".join(pending))
            self._pending = []
            self._pending_size = 0

    def exposition(self) -> Exposition:
        self._flush()
        return Exposition(tuple(self.pieces), self.size)


def escape_label_value(value: str) -> str:
    """A label value escaped as prometheus-client escapes it (backslash, newline, quote)."""
    if "\\" in value or "\n" in value or '"' in value:  # rare: three tests beat three calls
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


class ExpositionStatistics(msgspec.Struct, frozen=True):
    """How much of the renders was reused: an unchanged component costs a lookup."""

    renders: int
    blocks_rendered: int
    """Per-component (and per-stream) blocks written anew."""
    blocks_reused: int
    """Blocks taken from the cache because what they are made of was unchanged."""
    cached: int
    """Blocks held now (components, histograms, breakers, streams of the last render)."""


S = TypeVar("S")
#: What a block is made of: text, or bytes (the histogram's, written by a bytes template).
T = TypeVar("T", str, bytes)


class _Pace:
    """When a render yields: once ``step_s`` seconds of work have passed since it began or
    last resumed (at every reading of the clock when 0, never when None).

    A step lasts as long as the loop's other work took while the render was waiting, up to
    ``_SHARE_CAP_S``: beside other work in long steps (a snapshot build of big chunks on a
    busy machine) a render of fixed short steps would get a few percent of the loop and take
    many seconds, a scrape's whole timeout; beside short requests its steps stay short. The
    cap is small: whatever the render's step, every request in flight waits through it."""

    def __init__(self, step_s: float | None) -> None:
        self._step_s = step_s
        self._paused: float | None = None
        self.until = _INF
        self.restart()

    def pause(self) -> None:
        """Called as the render yields."""
        self._paused = perf_counter()

    def restart(self) -> None:
        """Called as the render resumes."""
        step = self._step_s
        if step is None:
            return
        now = perf_counter()
        if step and self._paused is not None:
            step = max(step, min(now - self._paused, _SHARE_CAP_S))
        self.until = now + step


class _Blocks(Generic[S, T]):
    """One text per family for each name, kept while the name's source stays equal.

    Sources and texts are two dicts, not one of pairs: a pair per name would be one more
    object for the garbage collector to count, and a cold render's new objects are what
    sets off its collections (each a walk of the whole heap)."""

    def __init__(self, render: Callable[[str, S], tuple[T, ...]]) -> None:
        self._render: Callable[[str, S], tuple[T, ...]] = render
        self._sources: dict[str, S] = {}
        self._texts: dict[str, tuple[T, ...]] = {}
        self.rendered = 0
        self.reused = 0

    def __len__(self) -> int:
        return len(self._texts)

    def clear(self) -> None:
        self._sources = {}
        self._texts = {}

    def steps(self, items: Iterable[tuple[str, S]], pace: _Pace) -> Steps[list[tuple[T, ...]]]:
        """The blocks of ``items`` in their order, yielding as ``pace`` says; entries of
        names not among them go. The cache changes only at the end: a render abandoned
        halfway leaves it as it was."""
        old_sources, old_texts = self._sources, self._texts
        sources: dict[str, S] = {}
        texts: dict[str, tuple[T, ...]] = {}
        out: list[tuple[T, ...]] = []
        render = self._render
        rendered = 0
        for i, (name, source) in enumerate(items):
            # The clock is read every 8 items (a read costs as much as reusing a block).
            if not i & 7 and perf_counter() >= pace.until:
                pace.pause()
                yield
                pace.restart()
            kept = old_sources.get(name)
            if kept is None or (kept is not source and kept != source):
                text = render(name, source)
                rendered += 1
            else:
                text = old_texts[name]
                source = kept
            sources[name] = source
            texts[name] = text
            out.append(text)
        self._sources, self._texts = sources, texts
        self.rendered += rendered
        self.reused += len(out) - rendered
        # The previous render's entries go a part at a time: dropped whole, the dict
        # would free at once what only it still held (the sources of every component
        # that changed: 10,000 statuses are 20 ms of the loop).
        for old in (old_sources, old_texts):
            for _ in drop_steps(old, lambda: perf_counter() >= pace.until):
                pace.pause()
                yield
                pace.restart()
        return out


class _Fixed(Collector):
    """A collector over families already built (what prometheus-client's writers take)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _text(families: Iterable[Metric], openmetrics: bool) -> bytes:
    """``families`` in prometheus-client's own text (OpenMetrics without its ``# EOF``)."""
    if openmetrics:
        body: bytes = _om_generate_latest(_Fixed(families))  # type: ignore[no-untyped-call]
        return body[: -len(_EOF)]
    return generate_latest(_Fixed(families))


class ExpositionWriter:
    """Writes the Prometheus text format 0.0.4 and OpenMetrics 1.0 of snapshots.

    ``buckets`` are the latency histogram's upper bounds for snapshots that do not carry
    their own ``histogram_buckets`` (``component_histograms`` holds one count per bound
    and one for +Inf). One writer serves one endpoint: its cache is the previous render's
    blocks, so renders are serialized (``render`` waits for a lock; ``render_steps``
    refuses to start while another render holds it, as waiting on the event loop would
    stall it).
    """

    def __init__(self, buckets: Sequence[float] = LATENCY_BOUNDS) -> None:
        self.reference = SnapshotCollector(lambda: None, buckets)
        described = self.reference.describe()
        direct = tuple(
            m.name for section in _DIRECT_SECTIONS for m in self.reference.section(section, None)
        )
        order = ("system", *_DIRECT_SECTIONS, "process", "bookkeeping")
        if direct != _DIRECT or order != SECTIONS:  # the reference changed: follow it
            raise RuntimeError(
                f"the writer renders {order}: {_DIRECT}; the collector has {SECTIONS}: {direct}"
            )
        self._headers = {m.name: (_text([m], False), _text([m], True)) for m in described}
        self._buckets = tuple(buckets)
        self._bounds: tuple[float, ...] | None = None
        self._bucket_lines = b""
        self._le_ends: tuple[str, ...] = ()
        self._with_sum = True
        self._window = self._window_label = ""
        self._components: _Blocks[ComponentStatus, str] = _Blocks(self._component)
        self._histograms: _Blocks[tuple[float, ...], bytes] = _Blocks(self._histogram)
        self._breakers: _Blocks[BreakerStatus, str] = _Blocks(self._breaker)
        self._streams: _Blocks[StreamStatus, str] = _Blocks(self._stream)
        self._lock = threading.Lock()
        self._renders = 0
        #: Spellings of the floats of the previous renders (``_spell``), forgotten when
        #: a render begins with more than ``_SPELLINGS_KEPT`` of them.
        self._spelled: dict[float, str] = {}

    def statistics(self) -> ExpositionStatistics:
        caches = (self._components, self._histograms, self._breakers, self._streams)
        return ExpositionStatistics(
            renders=self._renders,
            blocks_rendered=sum(c.rendered for c in caches),
            blocks_reused=sum(c.reused for c in caches),
            cached=sum(len(c) for c in caches),
        )

    def render(
        self, snap: Snapshot, *, openmetrics: bool = False, extra: Collector | None = None
    ) -> bytes:
        """The exposition of ``snap``, then ``extra``'s families (other collectors, written
        by prometheus-client), as one body; blocking (tests, benchmarks, a worker thread)."""
        with self._lock:
            return finish(self._steps(snap, openmetrics, extra, _Pace(None))).body()

    def render_steps(
        self,
        snap: Snapshot,
        *,
        openmetrics: bool = False,
        extra: Collector | None = None,
        step_s: float | None = RENDER_STEP_S,
    ) -> Steps[Exposition]:
        """``render`` as steps (``steps.finish_async`` runs them on the event loop),
        yielding after ``step_s`` seconds of work (the clock is read every 8 components
        and after each piece of the body; never when None, at every reading when 0); the same
        bytes, in pieces. ``snap`` must not change meanwhile (snapshots do not).

        Raises ``RuntimeError`` when another render of this writer is under way."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("another render of this exposition writer is under way")
        try:
            return (yield from self._steps(snap, openmetrics, extra, _Pace(step_s)))
        finally:
            self._lock.release()

    def _steps(
        self, snap: Snapshot, om: bool, extra: Collector | None, pace: _Pace
    ) -> Steps[Exposition]:
        self._renders += 1
        if len(self._spelled) > _SPELLINGS_KEPT:
            self._spelled = {}
        ref = self.reference
        body = _Body()
        body.add(_text([f for f in ref.section("system", snap) if f.samples], om))
        window = f"{snap.performance.window_seconds}s"
        if window != self._window:  # in every quantile line: nothing cached holds
            self._components.clear()
            self._window = window
            self._window_label = escape_label_value(window)
        self._use_bounds(snap.histogram_buckets or self._buckets)
        comps = yield from self._components.steps(snap.detailed_components.items(), pace)
        yield from self._families(body, _COMPONENT_FAMILIES, comps, om, pace)
        sums = snap.latency_sums
        # A histogram's source is its counts and its sum in one tuple (of numbers only,
        # which the garbage collector stops tracking), compared with the kept one.
        hists = yield from self._histograms.steps(
            (
                (name, (*counts, sums.get(name, 0.0)))
                for name, counts in snap.component_histograms.items()
            ),
            pace,
        )
        yield from self._families(body, (_HISTOGRAM,), hists, om, pace)
        breakers = yield from self._breakers.steps(snap.circuit_breakers.items(), pace)
        yield from self._families(body, _BREAKER_FAMILIES, breakers, om, pace)
        streams = yield from self._streams.steps(snap.streaming.streams.items(), pace)
        yield from self._families(body, _STREAM_FAMILIES, streams, om, pace)
        tail: list[Metric] = [
            f
            for section in ("process", "bookkeeping")
            for f in ref.section(section, snap)
            if f.samples
        ]
        if extra is not None:
            tail += extra.collect()
        body.add(_text(tail, om))
        if om:
            body.add(_EOF)
        return body.exposition()

    def _use_bounds(self, bounds: tuple[float, ...]) -> None:
        """The histogram's bounds for this render (the snapshot's own when it has them):
        another set of bounds makes every cached histogram block stale."""
        if bounds == self._bounds:
            return
        self._histograms.clear()
        self._bounds = bounds
        le = le_labels(bounds)
        # prometheus-client leaves _count and _sum out when the first bound is negative.
        self._with_sum = float(le[0]) >= 0
        # One bytes %-template for a component's whole block: its name and a count per
        # bucket line, then _count (the last count) and _sum (its spelling); bytes, as a
        # bytes template is copied between its "%"s at memcpy's pace where a str one is
        # read a character at a time (le spellings are digits, signs, dots and letters:
        # never a "%").
        lines = "".join(
            f'{_HISTOGRAM}_bucket{{component="%s",le="{escape_label_value(b)}"}} %d.0\n' for b in le
        )
        if self._with_sum:
            lines += f'{_HISTOGRAM}_count{{component="%s"}} %d.0\n'
            lines += f'{_HISTOGRAM}_sum{{component="%s"}} %s\n'
        self._bucket_lines = lines.encode()
        self._le_ends = tuple(f'{escape_label_value(b)}"}} ' for b in le)

    def _families(
        self,
        body: _Body,
        names: Sequence[str],
        blocks: list[tuple[T, ...]],
        openmetrics: bool,
        pace: _Pace,
    ) -> Steps[None]:
        """Add each family of ``names``: its header, then its block of every name (a
        family's samples must be contiguous), in pieces near ``_PIECE_BYTES``, yielding
        as ``pace`` says between them; a family without samples is left out."""
        if not blocks:
            return
        for j, name in enumerate(names):
            # A family's column is taken with a C-level map, not zip(*blocks): zip made an
            # iterator per block, 10,000 tracked objects that lived through the render,
            # reached the oldest generation and set off its collection every few renders
            # (100 ms and more in a process holding a big aggregator).
            column = tuple(map(itemgetter(j), blocks))
            header: bytes | None = self._headers[name][openmetrics]
            n = len(column)
            start, step = 0, 64
            while start < n:
                text = column[0][:0].join(column[start : start + step])
                start += step
                if text:
                    if header is not None:
                        body.add(header)
                        header = None
                    piece = text.encode() if isinstance(text, str) else text
                    body.add(piece)
                    # Aim the next piece at _PIECE_BYTES, growing at most 4x a step.
                    step = max(16, min(4 * step, step * _PIECE_BYTES // len(piece)))
                else:
                    step *= 4  # blocks without this family's samples: cheap to pass over
                if perf_counter() >= pace.until:
                    pace.pause()
                    yield
                    pace.restart()

    # -- blocks: one text per family, "" where the family has no sample for it -----------

    def _spell(self, value: float) -> str:
        """``go_float(value)``, remembered for floats: a float's shortest spelling costs a
        microsecond or more (its digits are searched for), a lookup a fraction of that,
        and values repeat (a steady stream's rate in every window, a quantile that did not
        move, the same error rate in many components)."""
        if type(value) is float and value and value == value:  # 0.0 and -0.0 are one key
            got = self._spelled.get(value)
            if got is None:
                got = self._spelled[value] = go_float(value)
            return got
        return go_float(value)

    def _component(self, name: str, st: ComponentStatus) -> tuple[str, ...]:
        # One f-string per family (the three windows' lines of a family too), and a
        # float's spelling looked up inline (``known``) before _spell is called: these
        # blocks are most of a cold render, and every call, list, concatenation and
        # f-string per sample showed in it. A hit is right for any number equal to the
        # float kept (an int, a bool: Go spells every number as the float it equals);
        # 0.0, -0.0 and NaN are never kept.
        known, sp, g, hi, neg = self._spelled.get, self._spell, go_float, _INT_FAST, _INT_FAST_NEG
        e = escape_label_value(name)
        c = f'{{component="{e}"}} '
        cw = f'{{component="{e}",window="'
        n, x, y = st.items_processed, st.errors_encountered, st.client_errors
        windows = st.windows
        # The three views (``windows.VIEWS``), in one f-string per family when all are there.
        (k1, e1), (k2, e2), (k3, e3) = _WINDOW_ENDS
        if (
            (v1 := windows.get(k1)) is not None
            and (v2 := windows.get(k2)) is not None
            and (v3 := windows.get(k3)) is not None
        ):  # every window, the usual case
            i1, i2, i3 = v1.items_per_second, v2.items_per_second, v3.items_per_second
            r1, r2, r3 = v1.error_rate, v2.error_rate, v3.error_rate
            ips = (
                f"component_items_per_second{cw}{e1}{known(i1) or sp(i1)}\n"
                f"component_items_per_second{cw}{e2}{known(i2) or sp(i2)}\n"
                f"component_items_per_second{cw}{e3}{known(i3) or sp(i3)}\n"
            )
            erate = (
                f"component_error_rate{cw}{e1}{known(r1) or sp(r1)}\n"
                f"component_error_rate{cw}{e2}{known(r2) or sp(r2)}\n"
                f"component_error_rate{cw}{e3}{known(r3) or sp(r3)}\n"
            )
        else:
            ips = erate = ""
            for w, end in _WINDOW_ENDS:
                v = windows.get(w)
                if v is not None:
                    r, er = v.items_per_second, v.error_rate
                    ips += f"component_items_per_second{cw}{end}{known(r) or sp(r)}\n"
                    erate += f"component_error_rate{cw}{end}{known(er) or sp(er)}\n"
        q = f'{cw}{self._window_label}"}} '
        lat = st.latency
        spans = st.span_latency
        h = st.health
        return (
            f"component_health{c}{'1.0' if st.is_healthy else '0.0'}\n",
            f"component_health_score{c}{known(h) or sp(h)}\n",
            f"component_items_processed_total{c}{n}.0\n"
            if type(n) is int and neg < n < hi
            else f"component_items_processed_total{c}{g(n)}\n",
            f"component_errors_total{c}{x}.0\n"
            if type(x) is int and neg < x < hi
            else f"component_errors_total{c}{g(x)}\n",
            f"component_client_errors_total{c}{y}.0\n"
            if type(y) is int and neg < y < hi
            else f"component_client_errors_total{c}{g(y)}\n",
            ips,
            erate,
            "" if (v50 := lat.p50) is None else f"{_P50}{q}{known(v50) or sp(v50)}\n",
            "" if (v95 := lat.p95) is None else f"{_P95}{q}{known(v95) or sp(v95)}\n",
            "" if (v99 := lat.p99) is None else f"{_P99}{q}{known(v99) or sp(v99)}\n",
            *(("", "", "") if spans is None else self._span_quantiles(q, spans)),
        )

    def _span_quantiles(self, q: str, spans: Latency) -> tuple[str, str, str]:
        """The three ``component_span_latency_*`` lines of a component that has spans."""
        sp = self._spell
        return (
            "" if (v50 := spans.p50) is None else f"{_SPAN_P50}{q}{sp(v50)}\n",
            "" if (v95 := spans.p95) is None else f"{_SPAN_P95}{q}{sp(v95)}\n",
            "" if (v99 := spans.p99) is None else f"{_SPAN_P99}{q}{sp(v99)}\n",
        )

    def _histogram(self, name: str, source: tuple[float, ...]) -> tuple[bytes]:
        counts, total_s = source[:-1], source[-1]
        if not any(counts):
            return (b"",)  # never timed: zero buckets would only cost cardinality
        e = escape_label_value(name)
        cumulative = list(accumulate(counts))
        ends = self._le_ends
        if len(cumulative) != len(ends):
            raise ValueError(
                f"component {name!r}: {len(cumulative)} histogram counts for "
                f"{len(ends)} buckets (one per bound, then +Inf)"
            )
        first, last = cumulative[0], cumulative[-1]
        if (
            type(first) is int
            and type(last) is int  # a float, Fraction... anywhere carries on to the last
            and min(cumulative) > _INT_FAST_NEG
            and max(cumulative) < _INT_FAST
        ):  # plain counts, the usual case: one %-format of the name and the counts
            eb = e.encode()
            n = 2 * len(cumulative)
            args: list[object] = [eb] * (n + 4 if self._with_sum else n)
            args[1:n:2] = cumulative
            if self._with_sum:
                args[n + 1] = last
                args[n + 3] = self._spell(total_s).encode()
            return (self._bucket_lines % tuple(args),)
        head = f'{_HISTOGRAM}_bucket{{component="{e}",le="'
        pairs = zip(ends, cumulative, strict=True)
        text = "".join([f"{head}{end}{go_float(n)}\n" for end, n in pairs])
        if self._with_sum:
            c = f'{{component="{e}"}} '
            total = self._spell(total_s)
            text += f"{_HISTOGRAM}_count{c}{go_float(last)}\n{_HISTOGRAM}_sum{c}{total}\n"
        return (text.encode(),)

    def _breaker(self, name: str, b: BreakerStatus) -> tuple[str, ...]:
        c = f'{{component="{escape_label_value(name)}"}} '
        return (
            f"circuit_breaker_state{c}{go_float(BREAKER_CODES[b.state])}\n",
            f"circuit_breaker_failures_total{c}{go_float(b.failure_count)}\n",
        )

    def _stream(self, name: str, st: StreamStatus) -> tuple[str, ...]:
        s = f'{{stream="{escape_label_value(name)}"}} '
        used, size = st.buffer_used, st.buffer_size
        return (
            f"stream_messages_total{s}{go_float(st.total_messages)}\n",
            f"stream_message_rate{s}{go_float(st.message_rate)}\n",
            "" if used is None else f"stream_buffer_used{s}{go_float(used)}\n",
            "" if size is None else f"stream_buffer_size{s}{go_float(size)}\n",
        )
