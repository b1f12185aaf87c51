"""The deterministic stream every ingest peer folds: seeded, so each run sees the same events.

The stream is a block of ``block`` events (component, error?, latency) repeated until
``events`` have gone by; the expected totals per component are computed from the block,
so every peer is checked against the same numbers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from streammetrics.model.events import Event, encode_events

__all__ = ("LatencyDist", "Stream", "StreamSpec", "parse_latency")

LatencyKind = Literal["lognormal", "exponential", "uniform", "constant"]


@dataclass(frozen=True)
class LatencyDist:
    """A latency distribution in seconds."""

    kind: LatencyKind = "lognormal"
    """``lognormal`` (a, b = mu, sigma of ln seconds), ``exponential`` (a = mean),
    ``uniform`` (a..b) or ``constant`` (a)."""
    a: float = math.log(0.005)
    b: float = 1.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "lognormal":
            v = rng.lognormvariate(self.a, self.b)
        elif self.kind == "exponential":
            v = rng.expovariate(1.0 / self.a)
        elif self.kind == "uniform":
            v = rng.uniform(self.a, self.b)
        else:
            v = self.a
        return min(max(v, 0.0), 3600.0)  # the wire model accepts 0..86400 s

    def describe(self) -> str:
        if self.kind == "lognormal":
            return f"lognormal(median {math.exp(self.a) * 1e3:.3g} ms, sigma {self.b:g})"
        if self.kind == "exponential":
            return f"exponential(mean {self.a * 1e3:.3g} ms)"
        if self.kind == "uniform":
            return f"uniform({self.a * 1e3:.3g}..{self.b * 1e3:.3g} ms)"
        return f"constant({self.a * 1e3:.3g} ms)"


def parse_latency(text: str) -> LatencyDist:
    """``lognormal:MEDIAN_MS:SIGMA``, ``exponential:MEAN_MS``, ``uniform:LO_MS:HI_MS``,
    ``constant:MS``."""
    kind, *args = text.split(":")
    try:
        nums = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"latency {text!r}: arguments must be numbers") from None
    if kind == "lognormal":
        median, sigma = (nums + [5.0, 1.0][len(nums) :])[:2]
        return LatencyDist("lognormal", math.log(median / 1e3), sigma)
    if kind == "exponential" and len(nums) <= 1:
        return LatencyDist("exponential", (nums or [5.0])[0] / 1e3, 0.0)
    if kind == "uniform" and len(nums) == 2:
        return LatencyDist("uniform", nums[0] / 1e3, nums[1] / 1e3)
    if kind == "constant" and len(nums) == 1:
        return LatencyDist("constant", nums[0] / 1e3, 0.0)
    raise ValueError(
        f"latency {text!r}: use lognormal:MEDIAN_MS:SIGMA, exponential:MEAN_MS, "
        "uniform:LO_MS:HI_MS or constant:MS"
    )


@dataclass(frozen=True)
class StreamSpec:
    events: int = 1_000_000
    components: int = 10
    error_ratio: float = 0.01
    latency: LatencyDist = LatencyDist()
    seed: int = 1
    block: int = 64_000
    """Distinct events before the stream repeats (a multiple of ``batch``)."""
    batch: int = 1_000
    """Events per MessagePack batch."""

    def __post_init__(self) -> None:
        if self.events < 1 or self.components < 1:
            raise ValueError("events and components must be >= 1")
        if not 0.0 <= self.error_ratio <= 1.0:
            raise ValueError(f"error_ratio must be in 0..1, got {self.error_ratio!r}")
        if self.batch < 1 or self.block < self.batch or self.block % self.batch:
            raise ValueError("block must be a positive multiple of batch")


class Stream:
    """The events of a ``StreamSpec``, as parallel lists (cheap to index in a hot loop)."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        rng = random.Random(spec.seed)
        n = min(spec.block, _round_up(spec.events, spec.batch))
        self.names = [f"component_{i}" for i in range(spec.components)]
        self.comp = [rng.randrange(spec.components) for _ in range(n)]
        self.err = [rng.random() < spec.error_ratio for _ in range(n)]
        self.lat = [spec.latency.sample(rng) for _ in range(n)]
        self.block = n

    def expected(self) -> dict[str, tuple[int, int]]:
        """Per component (processed, errors) once all ``events`` have gone by."""
        counts = [[0, 0] for _ in self.names]
        full, rest = divmod(self.spec.events, self.block)
        for j in range(self.block):
            k = full + (1 if j < rest else 0)
            counts[self.comp[j]][1 if self.err[j] else 0] += k
        return {self.names[i]: (p, e) for i, (p, e) in enumerate(counts) if p or e}

    def event(self, j: int) -> Event:
        return Event(
            component=self.names[self.comp[j]],
            kind="error" if self.err[j] else "processed",
            latency=self.lat[j],
        )

    def batches(self, fmt: Literal["json", "msgpack"] = "msgpack") -> list[bytes]:
        """The block encoded as batches of ``spec.batch`` events."""
        b = self.spec.batch
        return [
            encode_events([self.event(j) for j in range(i, min(i + b, self.block))], fmt)
            for i in range(0, self.block, b)
        ]

    def batch_plan(
        self, batches: list[bytes], fmt: Literal["json", "msgpack"] = "msgpack"
    ) -> Iterator[bytes]:
        """The batches that carry exactly ``spec.events`` events, in stream order."""
        b = self.spec.batch
        left = self.spec.events
        i = 0
        while left >= b:
            yield batches[i % len(batches)]
            i += 1
            left -= b
        if left:
            start = (i * b) % self.block
            yield encode_events([self.event(start + j) for j in range(left)], fmt)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m
