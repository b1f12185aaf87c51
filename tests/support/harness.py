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
import httpx
import msgspec

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import Blueprint, parse_blueprint
from streammetrics.bus import Sink
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
async def started(
    blueprint: Blueprint | str, *sinks: Sink, within: float | None = None
) -> AsyncIterator[Harness]:
    """The blueprint (or its YAML text) running, ``sinks`` on its bus from the start; stopped
    (and drained) when the block ends. ``within``: the whole of it fails past that many
    seconds."""
    bp = parse_blueprint(blueprint) if isinstance(blueprint, str) else blueprint
    harness = Harness(bp, flush_interval=0.02)
    for sink in sinks:
        harness.bus.subscribe(sink)
    with anyio.fail_after(within):
        async with anyio.create_task_group() as tg:
            await tg.start(harness.run)
            try:
                yield harness
            finally:
                harness.stop()


@asynccontextmanager
async def running(blueprint: Blueprint | str) -> AsyncIterator[tuple[Harness, Aggregator]]:
    """The blueprint (or its YAML text) running, with an aggregator on its bus."""
    agg = Aggregator()
    async with started(blueprint, agg) as harness:
        yield harness, agg


@asynccontextmanager
async def serving(
    blueprint: Blueprint | str, *sinks: Sink
) -> AsyncIterator[tuple[Harness, httpx.AsyncClient, httpx.AsyncClient]]:
    """The blueprint running (as ``started``), with a client of its component ``api`` and
    one of its component ``metrics``."""
    async with started(blueprint, *sinks) as harness:
        ports = {w.component: w.port for w in harness.listening}
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['api']}") as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['metrics']}") as metrics,
        ):
            yield harness, api, metrics


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
