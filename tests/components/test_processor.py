"""The StreamProcessor, run for real in a pipeline: filter drops and counts, windowing by count
and by time."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from streammetrics.components.processor import StreamProcessor
from streammetrics.components.store import Store
from tests.support.harness import pipeline, rows, running, snapshot, stopped
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_filter_drops_falsy_items_and_counts_them(tmp_path: Path) -> None:
    db = tmp_path / "items.db"
    src = "{rate: 50000, batch: 100, limit: 300, routes: [keep, '', keep]}"
    async with running(pipeline(db, src, "{variant: filter, field: route}")) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
        proc = harness.components["proc"]
        assert isinstance(proc, StreamProcessor)
        stats = proc.statistics()
    assert (stats.received, stats.emitted, stats.dropped) == (300, 200, 100)
    assert snap.detailed_components["proc"].items_processed == 300  # dropped still processed
    stored = rows(db)
    assert len(stored) == 200
    assert all(r["route"] == "keep" for r in stored)


@pytest.mark.parametrize(("n", "size"), [(95, 10), (100, 10), (7, 50)])
async def test_windowing_emits_ceil_n_over_size_windows(tmp_path: Path, n: int, size: int) -> None:
    db = tmp_path / "windows.db"
    src = f"{{rate: 50000, batch: 100, limit: {n}}}"
    proc = f"{{variant: windowing, window_size: {size}}}"
    async with running(pipeline(db, src, proc)) as (harness, agg):
        await until(stopped(agg, "src", "proc", "store"))
        snap = snapshot(harness, agg)
    windows = rows(db)
    assert len(windows) == math.ceil(n / size)
    assert [w["count"] for w in windows] == [len(w["items"]) for w in windows]
    assert [i["id"] for w in windows for i in w["items"]] == list(range(n))  # in order
    assert windows[-1]["count"] == n - size * (len(windows) - 1)  # the flushed partial
    assert snap.streaming.streams["proc->store:kept"].total_messages == len(windows)
    assert snap.detailed_components["proc"].items_processed == n


async def test_time_window_closes_while_input_stays_open(tmp_path: Path) -> None:
    db = tmp_path / "windows.db"
    bp = f"""
system:
  name: w
  components:
    - {{name: api, type: APIEndpoint, config: {{port: 0}}}}
    - {{name: win, type: StreamProcessor,
       config: {{variant: windowing, window_size: null, window_seconds: 0.1}}}}
    - {{name: store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: api, to_component: win}}
    - {{from_component: win, to_component: store}}
"""
    async with running(bp) as (harness, _agg):
        port = harness.listening[0].port
        store = harness.components["store"]
        assert isinstance(store, Store)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post("/items/batch", json=[1, 2, 3])
            assert r.status_code == 202
            await until(lambda: store.statistics().rows == 1, within=2.0)
            r = await client.post("/items", json=4)
            assert r.status_code == 202
            await until(lambda: store.statistics().rows == 2, within=2.0)
    assert [w["items"] for w in rows(db)] == [[1, 2, 3], [4]]
