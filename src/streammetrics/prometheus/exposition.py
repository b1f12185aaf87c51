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
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import msgspec
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as _om_generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..breaker import BREAKER_CODES
from ..buckets import LATENCY_BOUNDS
from ..windows import VIEWS
from .collector import SECTIONS, SnapshotCollector, le_labels

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..snapshot import BreakerStatus, ComponentStatus, Snapshot, StreamStatus

__all__ = ("ExpositionStatistics", "ExpositionWriter", "escape_label_value", "go_float")

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


def escape_label_value(value: str) -> str:
    """A label value escaped as prometheus-client escapes it (backslash, newline, quote)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


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


class _Blocks(Generic[S]):
    """One text per family for each name, kept while the name's source stays equal."""

    def __init__(self, render: Callable[[str, S], tuple[bytes, ...]]) -> None:
        self._render = render
        self._entries: dict[str, tuple[S, tuple[bytes, ...]]] = {}
        self.rendered = 0
        self.reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries = {}

    def blocks(self, items: Iterable[tuple[str, S]]) -> list[tuple[bytes, ...]]:
        """The blocks of ``items`` in their order; entries of names not among them go."""
        old = self._entries
        new: dict[str, tuple[S, tuple[bytes, ...]]] = {}
        out: list[tuple[bytes, ...]] = []
        rendered = 0
        for name, source in items:
            entry = old.get(name)
            if entry is None or (entry[0] is not source and entry[0] != source):
                entry = (source, self._render(name, source))
                rendered += 1
            new[name] = entry
            out.append(entry[1])
        self._entries = new
        self.rendered += rendered
        self.reused += len(out) - rendered
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
    and one for +Inf). One writer serves one endpoint: its cache is
    the previous render's blocks, so calls are serialized (a lock; renders run in a
    worker thread).
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
        self._le_ends: tuple[str, ...] = ()
        self._with_sum = True
        self._window = self._window_label = ""
        self._components: _Blocks[ComponentStatus] = _Blocks(self._component)
        self._histograms: _Blocks[tuple[list[int], float]] = _Blocks(self._histogram)
        self._breakers: _Blocks[BreakerStatus] = _Blocks(self._breaker)
        self._streams: _Blocks[StreamStatus] = _Blocks(self._stream)
        self._lock = threading.Lock()
        self._renders = 0

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
        by prometheus-client), as one body; blocking: run it in a worker thread."""
        with self._lock:
            self._renders += 1
            ref = self.reference
            om = openmetrics
            parts: list[bytes] = [_text([f for f in ref.section("system", snap) if f.samples], om)]
            window = f"{snap.performance.window_seconds}s"
            if window != self._window:  # in every quantile line: nothing cached holds
                self._components.clear()
                self._window = window
                self._window_label = escape_label_value(window)
            self._use_bounds(snap.histogram_buckets or self._buckets)
            comps = self._components.blocks(snap.detailed_components.items())
            self._families(parts, _COMPONENT_FAMILIES, comps, om)
            hists = self._histograms.blocks(
                (name, (counts[:], snap.latency_sums.get(name, 0.0)))
                for name, counts in snap.component_histograms.items()
            )
            self._families(parts, (_HISTOGRAM,), hists, om)
            breakers = self._breakers.blocks(snap.circuit_breakers.items())
            self._families(parts, _BREAKER_FAMILIES, breakers, om)
            streams = self._streams.blocks(snap.streaming.streams.items())
            self._families(parts, _STREAM_FAMILIES, streams, om)
            tail: list[Metric] = [
                f
                for section in ("process", "bookkeeping")
                for f in ref.section(section, snap)
                if f.samples
            ]
            if extra is not None:
                tail += extra.collect()
            parts.append(_text(tail, om))
            if om:
                parts.append(_EOF)
            return b"".join(parts)

    def _use_bounds(self, bounds: tuple[float, ...]) -> None:
        """The histogram's bounds for this render (the snapshot's own when it has them):
        another set of bounds makes every cached histogram block stale."""
        if bounds == self._bounds:
            return
        self._histograms.clear()
        self._bounds = bounds
        le = le_labels(bounds)
        self._le_ends = tuple(f'{escape_label_value(b)}"}} ' for b in le)
        # prometheus-client leaves _count and _sum out when the first bound is negative.
        self._with_sum = float(le[0]) >= 0

    def _families(
        self,
        parts: list[bytes],
        names: Sequence[str],
        blocks: list[tuple[bytes, ...]],
        openmetrics: bool,
    ) -> None:
        """Append each family of ``names``: its header, then its block of every name (a
        family's samples must be contiguous); a family without samples is left out."""
        for i, name in enumerate(names):
            column = [b[i] for b in blocks if b[i]]
            if column:
                parts.append(self._headers[name][openmetrics])
                parts += column

    # -- blocks: one text per family, b"" where the family has no sample for it ----------

    def _component(self, name: str, st: ComponentStatus) -> tuple[bytes, ...]:
        g = go_float
        e = escape_label_value(name)
        c = f'{{component="{e}"}} '
        ips = erate = ""
        windows = st.windows
        for w in _WINDOWS:
            v = windows.get(w)
            if v is not None:
                cw = f'{{component="{e}",window="{w}"}} '
                ips += f"component_items_per_second{cw}{g(v.items_per_second)}\n"
                erate += f"component_error_rate{cw}{g(v.error_rate)}\n"
        cw = f'{{component="{e}",window="{self._window_label}"}} '
        lat = st.latency
        p50, p95, p99 = lat.p50, lat.p95, lat.p99
        spans = st.span_latency
        s50, s95, s99 = (None, None, None) if spans is None else (spans.p50, spans.p95, spans.p99)
        lq = "component_latency_"
        sq = "component_span_latency_"
        return (
            f"component_health{c}{'1.0' if st.is_healthy else '0.0'}\n".encode(),
            f"component_health_score{c}{g(st.health)}\n".encode(),
            f"component_items_processed_total{c}{g(st.items_processed)}\n".encode(),
            f"component_errors_total{c}{g(st.errors_encountered)}\n".encode(),
            f"component_client_errors_total{c}{g(st.client_errors)}\n".encode(),
            ips.encode(),
            erate.encode(),
            b"" if p50 is None else f"{lq}p50_seconds{cw}{g(p50)}\n".encode(),
            b"" if p95 is None else f"{lq}p95_seconds{cw}{g(p95)}\n".encode(),
            b"" if p99 is None else f"{lq}p99_seconds{cw}{g(p99)}\n".encode(),
            b"" if s50 is None else f"{sq}p50_seconds{cw}{g(s50)}\n".encode(),
            b"" if s95 is None else f"{sq}p95_seconds{cw}{g(s95)}\n".encode(),
            b"" if s99 is None else f"{sq}p99_seconds{cw}{g(s99)}\n".encode(),
        )

    def _histogram(self, name: str, source: tuple[list[int], float]) -> tuple[bytes, ...]:
        counts, total_s = source
        if not any(counts):
            return (b"",)  # never timed: 42 zero buckets would only cost cardinality
        e = escape_label_value(name)
        head = f'{_HISTOGRAM}_bucket{{component="{e}",le="'
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
        ):  # plain counts, the usual case: an int's digits and ".0", joined in C loops
            text = head + (".0\n" + head).join(map(operator.add, ends, map(str, cumulative)))
            text += ".0\n"
        else:
            pairs = zip(ends, cumulative, strict=True)
            text = "".join([f"{head}{end}{go_float(n)}\n" for end, n in pairs])
        if self._with_sum:
            c = f'{{component="{e}"}} '
            text += (
                f"{_HISTOGRAM}_count{c}{go_float(last)}\n{_HISTOGRAM}_sum{c}{go_float(total_s)}\n"
            )
        return (text.encode(),)

    def _breaker(self, name: str, b: BreakerStatus) -> tuple[bytes, ...]:
        c = f'{{component="{escape_label_value(name)}"}} '
        return (
            f"circuit_breaker_state{c}{go_float(BREAKER_CODES[b.state])}\n".encode(),
            f"circuit_breaker_failures_total{c}{go_float(b.failure_count)}\n".encode(),
        )

    def _stream(self, name: str, st: StreamStatus) -> tuple[bytes, ...]:
        s = f'{{stream="{escape_label_value(name)}"}} '
        used, size = st.buffer_used, st.buffer_size
        return (
            f"stream_messages_total{s}{go_float(st.total_messages)}\n".encode(),
            f"stream_message_rate{s}{go_float(st.message_rate)}\n".encode(),
            b"" if used is None else f"stream_buffer_used{s}{go_float(used)}\n".encode(),
            b"" if size is None else f"stream_buffer_size{s}{go_float(size)}\n".encode(),
        )
