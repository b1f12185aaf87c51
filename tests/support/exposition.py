"""The Prometheus text of ``/metrics``, parsed back with prometheus-client's own parsers."""

from __future__ import annotations

from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

OPENMETRICS: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def families(text: str, *, openmetrics: bool = False) -> dict[str, Metric]:
    """The metric families of an exposition, by name."""
    parse = parse_openmetrics if openmetrics else parse_text
    return {f.name: f for f in parse(text)}


def value(family: Metric, sample: str, **labels: str) -> float:
    """The one sample of ``family`` named ``sample`` with exactly ``labels``."""
    values = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    assert len(values) == 1, (sample, labels, family.samples)
    return values[0]


def by_label(family: Metric, label: str, suffix: str = "") -> dict[str, float]:
    """The values of ``family``'s samples whose name ends with ``suffix`` (``"_total"``: a
    counter's counts), by the value of their ``label``."""
    return {s.labels[label]: s.value for s in family.samples if s.name.endswith(suffix)}
