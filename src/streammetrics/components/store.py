"""The Store component: items into SQLite, one JSON document per row.

Items are written in batches: the consumer takes an item, then whatever else is
already waiting on its input (up to ``max_batch``), and writes them in one transaction.
One commit per batch instead of per item is what lets a file store keep up with a
fast Source, and under light load a batch is a single item, so nothing waits for a
batch to fill.

A file database is written from a worker thread (a commit may wait on the disk, which
must not stall the event loop). A ``CapacityLimiter(1)`` lets only one thread use the
connection at a time, which is what makes ``check_same_thread=False`` safe. An
in-memory database never touches a disk, so it is written on the event loop.

An in-memory store keeps at most ``max_rows`` rows (100,000 unless set): behind a fast
Source it would otherwise grow the process's memory without bound. Past the limit the
oldest rows are deleted in the transaction that inserts the new ones, and counted
(``StoreStatistics.dropped``). A file store keeps every row unless ``max_rows`` is set.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus
from msgspec import Meta

from ..model.types import describe_exception
from .base import Context, Input, ItemFailed, Processor, marked_to_fail

__all__ = ("MEMORY_MAX_ROWS", "Store", "StoreConfig", "StoreStatistics")

#: Rows an in-memory store keeps when ``max_rows`` is not set.
MEMORY_MAX_ROWS: Final = 100_000

T = TypeVar("T")

Identifier = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    path: str = ":memory:"
    """SQLite database file, or ``:memory:`` for a store that lives as long as the run."""
    table: Identifier = "items"
    """Table of the rows (created if missing); a plain identifier, as it is put in SQL."""
    max_batch: Annotated[int, Meta(ge=1, le=100_000)] = 500
    """Most items written in one transaction."""
    max_rows: Annotated[int, Meta(ge=1)] | None = None
    """Most rows the table keeps; past it the oldest are deleted and counted. None:
    ``MEMORY_MAX_ROWS`` (100,000) for ``:memory:``, no limit for a file."""

    def row_limit(self) -> int | None:
        """The limit in force: ``max_rows``, else the in-memory default."""
        if self.max_rows is not None:
            return self.max_rows
        return MEMORY_MAX_ROWS if self.path == ":memory:" else None


class StoreStatistics(msgspec.Struct, frozen=True):
    rows: int
    """Rows this store inserted in this run."""
    batches: int
    """Transactions committed."""
    dropped: int
    """Oldest rows deleted to keep the table within ``max_rows``."""
    rejected: int
    """Items that could not be stored (marked to fail, not JSON-encodable, SQLite error)."""
    open: bool
    """Whether the database connection is open (from start until ``run`` ends)."""


_encode = msgspec.json.Encoder().encode


class Store(Processor):
    """Persists every item it receives; passes items on when it has outputs.

    A ``Processor`` as every consumer of a binding is (its intake can run behind a
    circuit breaker), but its ``run`` takes items in batches and ``store()``s them,
    rather than handing them to ``process()`` one at a time."""

    type_name = "Store"
    Config = StoreConfig

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.config: StoreConfig = ctx.config
        self._conn: sqlite3.Connection | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._rows = 0
        self._batches = 0
        self._rejected = 0
        self._dropped = 0
        self._held = 0  # rows in the table (counted once at open, then kept)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            rows=self._rows,
            batches=self._batches,
            dropped=self._dropped,
            rejected=self._rejected,
            open=self._conn is not None,
        )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking database call where this store's connection lives."""
        if self._limiter is None:
            return fn(*args)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiter)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.config.path, check_same_thread=False)
        try:
            with conn:
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.config.table}" ('
                    "id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body TEXT NOT NULL)"
                )
            (self._held,) = conn.execute(f'SELECT COUNT(*) FROM "{self.config.table}"').fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _insert(self, rows: list[tuple[float, str]]) -> int:
        """Insert ``rows`` and delete the oldest past the limit, in one transaction;
        returns how many were deleted."""
        conn = self._conn
        if conn is None:
            raise RuntimeError(f"store {self.name!r} is not open (run() opens it)")
        table = self.config.table
        limit = self.config.row_limit()
        with conn:  # one transaction; rolled back if any row fails
            conn.executemany(f'INSERT INTO "{table}" (ts, body) VALUES (?, ?)', rows)
            excess = self._held + len(rows) - limit if limit is not None else 0
            if excess <= 0:
                return 0
            cur = conn.execute(
                f'DELETE FROM "{table}" WHERE id IN (SELECT id FROM "{table}" ORDER BY id LIMIT ?)',
                (excess,),
            )
            return max(0, cur.rowcount)

    async def _write(self, rows: list[tuple[float, str]]) -> None:
        dropped = await self._call(self._insert, rows)
        self._held += len(rows) - dropped
        self._dropped += dropped
        self._rows += len(rows)
        self._batches += 1

    async def store(self, items: list[Any]) -> list[Any]:
        """Write ``items`` in one transaction, counting each on the probe as processed or
        failed (an item ``marked_to_fail`` fails here, as in ``Processor.handle``); returns
        the items that were stored."""
        probe = self.ctx.probe
        t0 = time.perf_counter()
        wall = self.ctx.wall()
        rows: list[tuple[float, str]] = []
        kept: list[Any] = []
        for item in items:
            try:
                if marked_to_fail(item):
                    raise ItemFailed("item marked to fail")
                rows.append((wall, _encode(item).decode()))
            except (ItemFailed, TypeError, ValueError) as exc:  # EncodeError is a ValueError
                self._rejected += 1
                probe.error(detail=describe_exception(exc))
                continue
            kept.append(item)
        if not rows:
            return kept
        try:
            await self._write(rows)
        except sqlite3.Error as exc:  # a full disk or a locked file: count, keep going
            self._rejected += len(rows)
            probe.error(len(rows), detail=describe_exception(exc))
            return []
        latency = time.perf_counter() - t0
        for _ in rows:  # every item of the batch waited for the same commit
            probe.processed(latency=latency)
        return kept

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        if self.config.path != ":memory:":
            self._limiter = anyio.CapacityLimiter(1)
        # Opened before ``started()``: a path that cannot be opened stops the start.
        self._conn = await self._call(self._open)
        try:
            task_status.started()
            if not self.ctx.inputs:
                await anyio.sleep_forever()
            async with anyio.create_task_group() as tg:
                for inp in self.ctx.inputs:
                    tg.start_soon(self._drain, inp)
        finally:
            conn, self._conn = self._conn, None
            with anyio.CancelScope(shield=True):
                await self._call(conn.close)

    async def _drain(self, inp: Input) -> None:
        stream = inp.stream
        limit = self.config.max_batch
        async with stream:
            while True:
                await self.ctx.admit()  # while the breaker is open, items wait in the binding
                try:
                    first = await stream.receive()
                except anyio.EndOfStream:
                    return
                batch = [first]
                while len(batch) < limit:
                    try:
                        batch.append(stream.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                stored = await self.store(batch)
                if self.ctx.outputs:
                    for item in stored:
                        await self.ctx.send(item)
