"""A MetricsEndpoint running in the test's own event loop, on a loopback port; the Redis
source config the consumer tests give one; the blueprint of a consumer process.

Many test modules start an endpoint the same way (``port=0``, run in a task group until
the block ends) and talk to it over HTTP; this module holds that once, so a change in how
an endpoint starts or stops changes every such test together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml

from streammetrics.components.metrics import MetricsEndpoint


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[MetricsEndpoint]:
    """A MetricsEndpoint named ``metrics`` on a free loopback port, with ``config``;
    cancelled when the block ends."""
    ep = MetricsEndpoint(name="metrics", port=0, **config)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        yield ep
        tg.cancel_scope.cancel()


@asynccontextmanager
async def serving(**config: Any) -> AsyncIterator[tuple[MetricsEndpoint, httpx.AsyncClient]]:
    """``running(**config)`` and an HTTP client on its URL (5 s per request)."""
    async with running(**config) as ep, httpx.AsyncClient(base_url=ep.url, timeout=5) as client:
        yield ep, client


def redis_source(url: str, stream: str, **options: Any) -> dict[str, Any]:
    """A ``source: {redis: ...}`` config reading ``stream`` as consumer ``c1`` of group
    ``g``, with short blocking reads and lag samples so tests see changes quickly;
    ``options`` add to or override the Redis settings."""
    return {
        "redis": {
            "url": url,
            "stream": stream,
            "group": "g",
            "consumer": "c1",
            "block_ms": 50,
            "lag_interval_s": 0.05,
            **options,
        }
    }


def consumer_blueprint(path: Path, source: dict[str, Any]) -> Path:
    """Write, at ``path``, the blueprint of a ``streammetrics run`` process that is one
    MetricsEndpoint (any free port, 0.1 s ticks) reading ``source``; returns ``path``."""
    endpoint = {"port": 0, "tick_s": 0.1, "source": source}
    system = {"name": "redis_consumer", "components": [
        {"name": "metrics", "type": "MetricsEndpoint", "config": endpoint}
    ]}  # fmt: skip
    path.write_text(yaml.safe_dump({"system": system}, sort_keys=False))
    return path
