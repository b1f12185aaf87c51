"""Custom collectors and figures, each isolated from the others and from the built-ins.

prometheus-client's ``generate_latest`` walks the registry's collectors in turn and
aborts on the first one that raises, so one broken exporter collector would take the
whole ``/metrics`` down with it. Here every custom collector is called once per tick,
in a worker thread, inside its own ``try``: its families are checked (metric objects,
numeric values, no name already taken) and kept; a collector that raises, returns
garbage, or clashes is left out, its error listed in ``/metrics/json``'s ``errors``
and counted in ``streammetrics_collector_errors_total{collector}``. The render then
serves the families collected for the tick, so ``/metrics`` and ``/metrics/json`` show
the same figures and a collector never runs once per scrape.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..model.types import describe_exception

__all__ = (
    "CollectionView",
    "CustomCollection",
    "CustomCollectors",
    "CustomFamily",
    "CustomSample",
    "exposed_names",
)

#: Sample-name suffixes each metric type exposes besides its own name (prometheus-client's).
_TYPE_SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}
ERRORS_FAMILY: Final = "streammetrics_collector_errors"


class CustomSample(msgspec.Struct, frozen=True, gc=False):
    """One sample of a custom family, as ``/metrics/json`` shows it."""

    name: str
    """The sample's full name (``orders_total``, ``latency_bucket``…)."""
    labels: dict[str, str]
    value: float | None
    """null where the exposition says NaN."""


class CustomFamily(msgspec.Struct, frozen=True):
    """A custom collector's metric family in ``/metrics/json``'s ``custom`` section."""

    type: str
    help: str
    samples: list[CustomSample]
    collector: str
    """Which collector contributed it."""
    unit: str = ""


@dataclass(frozen=True)
class CustomCollection:
    """What the custom collectors and figure sources gave for one tick."""

    families: list[Metric] = field(default_factory=list)
    json: dict[str, CustomFamily] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Figure sources' results by name (a plugin's ``figures()``)."""
    errors: list[str] = field(default_factory=list)


EMPTY: Final = CustomCollection()


def exposed_names(families: Iterable[Metric]) -> set[str]:
    """Every sample name ``families`` put in an exposition (what a clash is about)."""
    out: set[str] = set()
    for m in families:
        out.add(m.name)
        out.update(m.name + s for s in _TYPE_SUFFIXES.get(m.type, ()))
    return out


def _describe(collector: Collector) -> str:
    """The class name, plus the metric's name for a prometheus-client metric object
    (``Counter:orders_placed``), whose class alone says nothing."""
    name = type(collector).__name__
    describe = getattr(collector, "describe", None)
    if describe is None:
        return name
    try:
        first = next(iter(describe()), None)
    except Exception:  # a broken describe() is for collect() to report
        return name
    return f"{name}:{first.name}" if isinstance(first, Metric) else name


def _check(metric: Any) -> Metric:
    """``metric`` if the exposition can render it; a ``TypeError`` naming what is wrong
    otherwise (so a collector returning junk fails here, not in the render)."""
    if not isinstance(metric, Metric):
        raise TypeError(f"collect() yielded {type(metric).__name__}, not a Metric family")
    for s in metric.samples:
        if not isinstance(s.value, int | float) or isinstance(s.value, bool):
            raise TypeError(f"sample {s.name} has a non-numeric value {s.value!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in s.labels.items()):
            raise TypeError(f"sample {s.name} has non-string labels {s.labels!r}")
    return metric


def _json(metric: Metric, collector: str) -> CustomFamily:
    return CustomFamily(
        type=metric.type,
        help=metric.documentation,
        unit=metric.unit,
        collector=collector,
        samples=[
            CustomSample(s.name, dict(s.labels), None if math.isnan(s.value) else float(s.value))
            for s in metric.samples
        ],
    )


class CustomCollectors:
    """The custom collectors of one endpoint; ``reserved`` are the built-in names."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._reserved = frozenset(reserved)
        self._collectors: dict[str, Collector] = {}
        self._failures: dict[str, int] = {}
        self._busy = threading.Lock()

    def __len__(self) -> int:
        return len(self._collectors)

    def reserve(self, names: Iterable[str]) -> None:
        """Names a built-in family took since: a custom collector reusing one clashes."""
        self._reserved |= frozenset(names)

    def add(self, collector: Collector, name: str | None = None) -> str:
        """Add ``collector`` under ``name`` (its class name, numbered if taken); returns
        the name its errors are listed under."""
        base = name or _describe(collector)
        key, n = base, 1
        while key in self._collectors:
            n += 1
            key = f"{base}#{n}"
        self._collectors[key] = collector
        self._failures.setdefault(key, 0)
        return key

    def collect(self) -> tuple[list[Metric], dict[str, CustomFamily], list[str]]:
        """Call every collector (blocking: run it in a worker thread)."""
        if not self._busy.acquire(blocking=False):
            # The previous tick's call is still stuck in a collector (abandoned after its
            # deadline): one stuck thread is enough.
            return [], {}, ["custom collectors: the previous collection is still running"]
        try:
            families: list[Metric] = []
            js: dict[str, CustomFamily] = {}
            errors: list[str] = []
            taken = set(self._reserved)
            for key, c in list(self._collectors.items()):
                try:
                    got = [_check(m) for m in c.collect()]
                    names = exposed_names(got)
                    clash = sorted(names & taken)
                    if clash:
                        raise ValueError(f"metric names already exposed: {', '.join(clash)}")
                except Exception as exc:
                    self._failures[key] += 1
                    errors.append(f"collector {key!r} failed: {describe_exception(exc)}")
                    continue
                taken |= names
                families += got
                for m in got:
                    js[m.name] = _json(m, key)
            return families, js, errors
        finally:
            self._busy.release()

    def timed_out(self, after_s: float) -> str:
        """Count a collection abandoned past its deadline against every collector."""
        for key in self._collectors:
            self._failures[key] += 1
        return f"custom collectors timed out after {after_s:g}s"

    def errors_family(self) -> Metric:
        fam = CounterMetricFamily(
            ERRORS_FAMILY,
            "Times a custom collector failed (raised, returned junk, clashed or timed out)",
            labels=["collector"],
        )
        for key, n in sorted(self._failures.items()):
            fam.add_metric([key], n)
        return fam


class CollectionView(Collector):
    """The registry's face of the custom collectors: the families of the current tick
    and the error counter; it never calls a custom collector itself."""

    def __init__(
        self, collectors: CustomCollectors, current: Callable[[], CustomCollection]
    ) -> None:
        self._collectors = collectors
        self._current = current

    def collect(self) -> Iterator[Metric]:
        if not len(self._collectors):
            return
        yield from self._current().families
        yield self._collectors.errors_family()
