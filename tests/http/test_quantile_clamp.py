"""Quantiles as a real endpoint serves them, for events posted over HTTP: interpolated
inside the bucket clamped to the smallest and largest latency observed."""

from __future__ import annotations

import random

import pytest

from tests.support.endpoints import serving
from tests.support.exposition import by_label, families
from tests.support.waiting import poll

pytestmark = pytest.mark.anyio


async def test_constant_and_narrow_latencies_read_inside_what_was_observed() -> None:
    rng = random.Random(4)
    narrow = [rng.uniform(0.010, 0.011) for _ in range(2000)]
    events = [{"component": "api", "kind": "processed", "latency": 0.0103}] * 200 + [
        {"component": "narrow", "kind": "processed", "latency": x} for x in narrow
    ]
    async with serving(tick_s=0.1) as (_ep, client):
        r = await client.post("/events", json=events)
        assert r.status_code == 200 and r.json()["accepted"] == len(events)

        def both_timed(body: dict[str, dict[str, dict[str, dict[str, int]]]]) -> bool:
            comps = body.get("detailed_components", {})
            return all(comps.get(n, {}).get("latency", {}).get("count") for n in ("api", "narrow"))

        body = await poll(client, "/metrics/json", both_timed)
        api = body["detailed_components"]["api"]["latency"]
        # 10.3 ms is in the ladder bucket (0.01, 0.0128]: unclamped p50 read 11.4 ms;
        # clamped it is the latency itself (within a float32 step once its second ended)
        for q in ("p50", "p95", "p99"):
            assert api[q] == pytest.approx(0.0103, rel=1e-6), (q, api)
        got = body["detailed_components"]["narrow"]["latency"]
        exact = sorted(narrow)
        for q, at in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            want = exact[int(at * len(exact))]
            assert exact[0] * (1 - 1e-6) <= got[q] <= exact[-1] * (1 + 1e-6)
            assert abs(got[q] - want) / want < 0.01, (q, got[q], want)
        # /metrics serves the same figure as its p50 gauge
        r = await client.get("/metrics")
        p50 = by_label(families(r.text)["component_latency_p50_seconds"], "component")
        assert p50["api"] == pytest.approx(0.0103, rel=1e-6)
