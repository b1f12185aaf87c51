"""What a batch of finished spans (an OTLP export) adds to one component, summed.

Spans reported by a tracing SDK arrive complete, many at a time: summing them per
component before they reach the aggregator makes folding cost a few adds per span and
one window update per component, as a probe's ``Delta`` does for counted items.
"""

from __future__ import annotations

import msgspec

from .events import Delta

__all__ = ("SpanDelta",)


class SpanDelta(msgspec.Struct, gc=False):
    """The spans of one component in one batch."""

    items: Delta
    """The spans that count as items (processed, or errors), with their durations as
    latency, folded as a probe's delta is."""
    spans: int
    """Every span of the component in the batch, of any kind."""
    span_counts: list[int]
    """Per-bucket counts of every span's duration over the aggregator's ladder
    (``buckets.Ladder``, +Inf last): the component's span latency."""
    span_sum: float
    """Sum of those durations, in seconds."""
    trace_ids: list[str]
    """The distinct trace ids of these spans (hex), for ``traces.total_traces``."""
