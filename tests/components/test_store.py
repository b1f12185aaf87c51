"""The Store, run for real: items into a SQLite file on disk, committed in batches, passed on
to its outputs, and a start that fails when the file cannot be opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.components.store import Store
from streammetrics.harness import Harness
from tests.support.harness import rows, running, snapshot, stopped
from tests.support.waiting import until

pytestmark = pytest.mark.anyio


async def test_store_with_outputs_passes_items_on() -> None:
    bp = """
system:
  name: chain
  components:
    - {name: src, type: Source, config: {rate: 50000, batch: 50, limit: 120, error_ratio: 0.25}}
    - {name: first, type: Store}
    - {name: second, type: Store, config: {table: copies}}
  bindings:
    - {from_component: src, to_component: first}
    - {from_component: first, to_component: second}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "first", "second"))
        snap = snapshot(harness, agg)
        first, second = harness.components["first"], harness.components["second"]
        assert isinstance(first, Store) and isinstance(second, Store)
        assert first.statistics().rows == 90
        assert first.statistics().rejected == 30
        assert second.statistics().rows == 90
    assert snap.detailed_components["first"].errors_encountered == 30
    assert snap.streaming.streams["first->second:input"].total_messages == 90


async def test_store_commits_in_batches_and_closes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    bp = f"""
system:
  name: s
  components:
    - {{name: src, type: Source, config: {{rate: 100000, batch: 1000, limit: 3000}}}}
    - {{name: store, type: Store, config: {{path: "{db}", table: events, max_batch: 400}}}}
  bindings:
    - {{from_component: src, to_component: store, buffer: 2000}}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "store"))
        store = harness.components["store"]
        assert isinstance(store, Store)
        stats = store.statistics()
        assert not store.statistics().open  # closed in run()'s finally
    assert stats.rows == 3000
    assert stats.batches < 3000  # many items per commit, each batch at most 400
    assert stats.batches >= 3000 / 400
    assert len(rows(db, "events")) == 3000


async def test_store_that_cannot_open_stops_the_start(tmp_path: Path) -> None:
    bp = f"""
system:
  name: s
  components:
    - {{name: store, type: Store, config: {{path: "{tmp_path}/missing/dir/s.db"}}}}
"""
    harness = Harness(parse_blueprint(bp))
    with pytest.raises(BaseExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(harness.run)
    assert info.group_contains(sqlite3.OperationalError)


async def test_store_stores_what_it_is_given_and_counts_each_item() -> None:
    bp = "system: {name: s, components: [{name: store, type: Store}]}"
    async with running(bp) as (harness, agg):
        store = harness.components["store"]
        assert isinstance(store, Store)
        assert await store.store([{"n": 1}]) == [{"n": 1}]
        assert await store.store([{"n": 2, "fail": True}]) == []
        assert await store.store([{"n": 3}]) == [{"n": 3}]
        assert store.statistics().rows == 2
        comp = snapshot(harness, agg).detailed_components["store"]
    assert (comp.items_processed, comp.errors_encountered) == (2, 1)
    assert comp.last_error == "ItemFailed: item marked to fail"
