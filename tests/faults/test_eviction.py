"""Untrusted names that never come back: one ``stopped`` event (ingest taking lifecycle
events) for a component nobody declared must not hold ``/health`` at 503 forever. On a
real endpoint on loopback with a 1 s ``component_ttl_s`` the component, its series and its
critical alert go after the TTL (the alert shows resolved), ``/health`` recovers and the
eviction is counted."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from tests.support.endpoints import serving as endpoint
from tests.support.exposition import families, value

pytestmark = pytest.mark.anyio

#: A producer trusted to say when it stops (HTTP ingest refuses lifecycle events by default).
ACCEPT = {"lifecycle": "accept"}


async def _health_until(client: httpx.AsyncClient, code: int, within: float) -> float:
    """Poll ``/health`` until it answers ``code``; returns when (monotonic)."""
    with anyio.fail_after(within):
        while (await client.get("/health")).status_code != code:  # noqa: ASYNC110 - the server's tick
            await anyio.sleep(0.05)
    return time.monotonic()


async def test_a_stopped_stranger_degrades_health_until_its_ttl_then_goes() -> None:
    ttl = 1.0
    async with endpoint(component_ttl_s=ttl, tick_s=0.2, ingest=ACCEPT) as (_ep, client):
        assert (await client.get("/health")).status_code == 200
        r = await client.post("/events", json={"component": "ghost", "kind": "stopped"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        sent = time.monotonic()
        await _health_until(client, 503, within=2)
        alerts = (await client.get("/alerts")).json()
        assert [(a["name"], a["component"]) for a in alerts["alerts"]] == [
            ("ComponentDown", "ghost")
        ]
        text = (await client.get("/metrics")).text
        assert 'component="ghost"' in text
        assert (
            value(
                families(text)["streammetrics_components_evicted"],
                "streammetrics_components_evicted_total",
            )
            == 0
        )

        back = await _health_until(client, 200, within=ttl + 3)
        assert back - sent > ttl  # not before the TTL
        alerts = (await client.get("/alerts")).json()
        assert alerts["alerts"] == []
        assert [(a["name"], a["component"], a["state"]) for a in alerts["resolved_alerts"]] == [
            ("ComponentDown", "ghost", "resolved")
        ]
        text = (await client.get("/metrics")).text
        assert 'component="ghost"' not in text
        assert 'component="metrics"' in text  # the endpoint itself is declared: it stays
        assert (
            value(
                families(text)["streammetrics_components_evicted"],
                "streammetrics_components_evicted_total",
            )
            == 1
        )
        body = (await client.get("/metrics/json")).json()
        assert body["components_evicted"] == 1 and body["streams_evicted"] == 0
        assert "ghost" not in body["detailed_components"]
        components = (await client.get("/components")).json()["components"]
        assert set(components) == {"metrics"}


async def test_a_busy_stranger_is_kept_and_the_default_keeps_what_went_quiet() -> None:
    """A component that keeps reporting is never evicted, however long it lives; and with
    the default TTL (600 s) a quiet one is still there seconds later."""
    async with endpoint(component_ttl_s=0.6, tick_s=0.1) as (_ep, client):
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            r = await client.post("/events", json={"component": "busy", "kind": "processed"})
            assert r.status_code == 200
            await anyio.sleep(0.1)
        body = (await client.get("/metrics/json")).json()
        assert body["detailed_components"]["busy"]["items_processed"] >= 10
        assert body["components_evicted"] == 0
    async with endpoint(tick_s=0.1, ingest=ACCEPT) as (_ep, client):
        await client.post("/events", json={"component": "quiet", "kind": "stopped"})
        await anyio.sleep(1.0)
        body = (await client.get("/metrics/json")).json()
        assert "quiet" in body["detailed_components"] and body["components_evicted"] == 0
