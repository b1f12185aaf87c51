"""The Store, run for real: items into a SQLite file on disk, committed in batches, passed on
to its outputs, and a start that fails when the file cannot be opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.components.store import MEMORY_MAX_ROWS, Store, StoreConfig
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


def _store_rows(store: Store) -> list[tuple[int, Any]]:
    """(id, item) of every row the store's open connection holds, in row order."""
    conn = store._conn  # an in-memory database is reachable only through its connection
    assert conn is not None
    return [(i, msgspec.json.decode(b)) for i, b in conn.execute("SELECT id, body FROM items")]


async def test_an_in_memory_store_keeps_max_rows_dropping_the_oldest_and_counting_them() -> None:
    bp = "system: {name: s, components: [{name: store, type: Store, config: {max_rows: 5}}]}"
    async with running(bp) as (harness, _agg):
        store = harness.components["store"]
        assert isinstance(store, Store)
        await store.store([{"n": i} for i in range(3)])
        assert store.statistics().dropped == 0
        await store.store([{"n": i} for i in range(3, 11)])  # one batch past the limit
        await store.store([{"n": 11}])
        kept = _store_rows(store)
        st = store.statistics()
    assert [item["n"] for _id, item in kept] == [7, 8, 9, 10, 11]  # the newest five
    assert (st.rows, st.dropped) == (12, 7)


async def test_an_in_memory_store_is_bounded_by_default_and_a_file_store_keeps_all(
    tmp_path: Path,
) -> None:
    assert StoreConfig().row_limit() == MEMORY_MAX_ROWS == 100_000
    assert StoreConfig(path=str(tmp_path / "a.db")).row_limit() is None
    db = tmp_path / "s.db"
    bp = f"""
system:
  name: s
  components:
    - {{name: src, type: Source, config: {{rate: 100000, batch: 1000, limit: 3000}}}}
    - {{name: store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: src, to_component: store, buffer: 2000}}
"""
    async with running(bp) as (harness, agg):
        await until(stopped(agg, "src", "store"))
        store = harness.components["store"]
        assert isinstance(store, Store)
        assert store.statistics().dropped == 0
    assert len(rows(db)) == 3000


async def test_a_file_store_with_max_rows_counts_rows_already_in_the_file(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    bp = f"""
system:
  name: s
  components: [{{name: store, type: Store, config: {{path: "{db}", max_rows: 4}}}}]
"""
    async with running(bp) as (harness, _agg):
        store = harness.components["store"]
        assert isinstance(store, Store)
        await store.store([{"n": i} for i in range(3)])
    async with running(bp) as (harness, _agg):  # a second run finds three rows there
        store = harness.components["store"]
        assert isinstance(store, Store)
        await store.store([{"n": 3}, {"n": 4}])
        assert store.statistics().dropped == 1
    assert [item["n"] for item in rows(db)] == [1, 2, 3, 4]
