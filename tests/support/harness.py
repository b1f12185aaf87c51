"""Shared by the harness-level tests: a blueprint running in-process, components that
no blueprint can name put into one, and polling."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from streammetrics.aggregator import Aggregator
from streammetrics.blueprint import Blueprint, parse_blueprint
from streammetrics.components import Component
from streammetrics.harness import Harness


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
