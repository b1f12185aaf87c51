"""A seeded system of N components, shared by the scale case and the HTTP servers."""

from __future__ import annotations

import random

from streammetrics.aggregator import Aggregator
from streammetrics.bus import EventBus

__all__ = ("seed_bus", "seeded_aggregator")


def seeded_aggregator(
    components: int, events_per_component: int = 100, *, seed: int = 1, error_ratio: float = 0.01
) -> Aggregator:
    """An aggregator that has seen ``events_per_component`` timed events from each of
    ``components`` components (1 % errors: every component stays healthy)."""
    bus = EventBus()
    agg = Aggregator(max_components=max(components, 1))
    bus.subscribe(agg)
    seed_bus(bus, components, events_per_component, seed=seed, error_ratio=error_ratio)
    return agg


def seed_bus(
    bus: EventBus,
    components: int,
    events_per_component: int = 100,
    *,
    seed: int = 1,
    error_ratio: float = 0.01,
) -> None:
    """Report ``events_per_component`` timed events from each of ``components`` components
    through ``bus``'s probes, and flush them into its subscribers (a MetricsEndpoint's
    aggregator, once it runs)."""
    rng = random.Random(seed)
    lats = [rng.lognormvariate(-5.3, 1.0) for _ in range(256)]
    errors_every = max(int(1 / error_ratio), 1) if error_ratio > 0 else 0
    for i in range(components):
        p = bus.probe(f"component_{i:05d}")
        for k in range(events_per_component):
            lat = lats[(i + k) & 255]
            if errors_every and k % errors_every == errors_every - 1:
                p.error(latency=lat, detail="synthetic failure")
            else:
                p.processed(latency=lat)
        if i % 1000 == 999:
            bus.flush()
    bus.flush()
