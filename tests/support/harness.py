"""Shared by the harness-level tests: a blueprint running in-process, components that
no blueprint can name put into one, a pipeline from a Source through a StreamProcessor
into a Store, and what the Store wrote."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import Blueprint, parse_blueprint
from streammetrics.components import Component
from streammetrics.harness import Harness
from streammetrics.snapshot import Figures


def with_class(bp: Blueprint, name: str, cls: type[Component]) -> Blueprint:
    """``bp`` with component ``name`` run by ``cls`` (a type no blueprint can name)."""
    comps = tuple(
        dataclasses.replace(c, cls=cls, type=cls.type_name) if c.name == name else c
        for c in bp.components
    )
    return dataclasses.replace(bp, components=comps)


@asynccontextmanager
async def running(blueprint: Blueprint | str) -> AsyncIterator[tuple[Harness, Aggregator]]:
    """The blueprint (or its YAML text) running, with an aggregator on its bus."""
    bp = parse_blueprint(blueprint) if isinstance(blueprint, str) else blueprint
    harness = Harness(bp, flush_interval=0.02)
    agg = Aggregator()
    harness.bus.subscribe(agg)
    async with anyio.create_task_group() as tg:
        await tg.start(harness.run)
        try:
            yield harness, agg
        finally:
            harness.stop()


async def until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for ``cond`` while the system runs; fail the test after ``within`` seconds.
    Polling, because the figures belong to other tasks and no event announces them."""
    with anyio.fail_after(within):
        while not cond():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def stopped(agg: Aggregator, *names: str) -> Callable[[], bool]:
    """True once each of ``names`` reported ``stopped`` (a finished pipeline has drained)."""

    def check() -> bool:
        comps = agg.figures().detailed_components
        return all(n in comps and comps[n].status == "stopped" for n in names)

    return check


def snapshot(harness: Harness, agg: Aggregator) -> Figures:
    """The aggregator's figures once the bus has handed over what the probes counted."""
    harness.bus.flush()
    return agg.figures()


def rows(db: Path, table: str = "items") -> list[Any]:
    """The items a Store wrote to ``db``, decoded, in row order."""
    conn = sqlite3.connect(db)
    try:
        return [msgspec.json.decode(b) for (b,) in conn.execute(f"SELECT body FROM {table}")]
    finally:
        conn.close()


def pipeline(db: Path, source: str, processor: str, n_bindings_buffer: int = 1000) -> str:
    """A blueprint: Source ``src`` (config ``source``) -> StreamProcessor ``proc`` (config
    ``processor``) -> Store ``store`` writing to ``db``."""
    return f"""
system:
  name: pipeline
  components:
    - {{name: src, type: Source, config: {source}}}
    - {{name: proc, type: StreamProcessor, config: {processor}}}
    - {{name: store, type: Store, config: {{path: "{db}"}}}}
  bindings:
    - {{from_component: src, to_component: proc, buffer: {n_bindings_buffer}}}
    - {{from_component: proc, to_component: store, stream_name: kept}}
"""
