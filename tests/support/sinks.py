"""A sink that records what the bus hands it, for the tests that watch the bus."""

from __future__ import annotations

from collections.abc import Sequence

from streammetrics.model.events import Delta, Event, Rejection


class Recorder:
    """Every event and delta the bus hands over, in order; ``reject``: it refuses the first
    event of each batch (a sink's rejections go back to the publisher)."""

    def __init__(self, reject: bool = False) -> None:
        self.events: list[Event] = []
        self.deltas: list[Delta] = []
        self.reject = reject

    def fold_events(self, events: Sequence[Event]) -> list[Rejection]:
        self.events += events
        return [Rejection(0, "events[0]", "no")] if self.reject else []

    def fold_deltas(self, deltas: Sequence[Delta]) -> None:
        self.deltas += deltas

    @property
    def breaker(self) -> list[tuple[str, str | None, float | None]]:
        """The breaker events: (component, state, timestamp)."""
        return [(e.component, e.detail, e.timestamp) for e in self.events if e.kind == "breaker"]
