"""Names with control characters sent to a real MetricsEndpoint over ``POST /events``:
each such event is rejected alone, counted, named by index and field; the rest of its body
folds; and ``/metrics`` never carries the raw character (the Prometheus text format
escapes only backslash, quote and newline in a label)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import anyio
import httpx
import pytest

from streammetrics import Event
from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.model.events import encode_events
from tests.support.endpoints import serving
from tests.support.exposition import by_label, families

pytestmark = pytest.mark.anyio

MSGPACK = {"content-type": "application/msgpack"}
#: NUL, ESC (a terminal escape that would clear the screen), BEL, DEL, a C1 control, a
#: bidirectional override, a zero-width space.
HOSTILE = ("\x00", "\x1b[2J", "\x07", "\x7f", "\x9b", "\u202e", "\u200b")


def endpoint() -> AbstractAsyncContextManager[tuple[MetricsEndpoint, httpx.AsyncClient]]:
    return serving(tick_s=0.05)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_control_characters_in_names_never_reach_metrics(fmt: str) -> None:
    evs = [Event("api", "processed", count=3, stream="orders")]
    for bad in HOSTILE:
        evs.append(Event(f"api{bad}", "processed"))
        evs.append(Event("api", "processed", stream=f"orders{bad}"))
    evs.append(Event("api", "error"))
    headers = MSGPACK if fmt == "msgpack" else {"content-type": "application/json"}
    async with endpoint() as (ep, client):
        r = await client.post("/events", content=encode_events(evs, fmt), headers=headers)  # type: ignore[arg-type]
        assert r.status_code == 200
        got = r.json()
        n = 2 * len(HOSTILE)
        assert (got["accepted"], got["rejected"], got["malformed"]) == (2, n, n)
        assert [x["path"] for x in got["rejections"]] == [
            f"events[{i}].{field}"
            for k in range(len(HOSTILE))
            for i, field in ((1 + 2 * k, "component"), (2 + 2 * k, "stream"))
        ]
        assert all(
            "a name must be printable characters only" in x["reason"] for x in got["rejections"]
        )
        await anyio.sleep(0.15)  # the next ticks' render
        raw = await client.get("/metrics")
        health = await client.get("/health")
    assert health.status_code == 200
    text = raw.text
    for bad in HOSTILE:
        assert bad[0] not in text
    fams = families(text)
    rejected = by_label(fams["streammetrics_events_rejected"], "reason", "_total")
    assert rejected["malformed"] == n
    snap = ep.aggregator.figures()
    assert set(snap.detailed_components) == {"metrics", "api"}
    assert (
        snap.detailed_components["api"].items_processed,
        snap.detailed_components["api"].errors_encountered,
    ) == (3, 1)
    assert set(snap.streaming.streams) == {"orders"}
