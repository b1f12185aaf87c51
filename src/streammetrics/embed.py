"""Embedding: a metrics endpoint inside an existing anyio or asyncio program.

``async with serve(port=9000) as endpoint`` starts the endpoint in the background of the
block and stops it (gracefully) when the block ends; ``await run(port=9000)`` serves
until cancelled, for ``asyncio.create_task`` or an anyio task group. Either way the
program's code reports through ``endpoint.probe("name")``: plain int counters that the
endpoint flushes into its own in-process event bus on a short tick.

The server is uvicorn on asyncio; under anyio that means the asyncio backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .components.metrics import MetricsEndpoint, MetricsEndpointConfig
from .http.security import CorsSettings, RateLimitSettings

__all__ = ("ProductionMetricsEndpoint", "ProductionMetricsEndpointConfig", "run", "serve")


class ProductionMetricsEndpointConfig(
    MetricsEndpointConfig, frozen=True, forbid_unknown_fields=True
):
    """A MetricsEndpoint's config with the production features on by default: CORS for
    browser dashboards (GET from any origin, never with credentials), a per-client rate
    limit of 100 requests a second (``/health`` ten times that); graceful shutdown
    (``shutdown_timeout_s``) is every endpoint's. Each can be set, or turned off with
    ``null``."""

    cors: CorsSettings | None = CorsSettings(allow_origins=["*"])
    """As MetricsEndpoint's, on by default: GET from every origin, no credentials.
    Name your dashboards' origins in production (``{allow_origins: [https://...]}``)."""
    rate_limit: RateLimitSettings | None = RateLimitSettings()
    """As MetricsEndpoint's, on by default: 100 requests per second per client address."""


class ProductionMetricsEndpoint(MetricsEndpoint):
    """A MetricsEndpoint with CORS, rate limiting and graceful shutdown on by default.

    In code it also takes the specification's switches: ``enable_cors=False`` and
    ``enable_rate_limit=False`` turn those features off (``True`` keeps the default or
    the ``cors=`` / ``rate_limit=`` given).
    """

    type_name = "ProductionMetricsEndpoint"
    Config = ProductionMetricsEndpointConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for switch, key in (("enable_cors", "cors"), ("enable_rate_limit", "rate_limit")):
            if switch in kwargs and not kwargs.pop(switch):
                kwargs[key] = None
        super().__init__(*args, **kwargs)


def _endpoint(endpoint: MetricsEndpoint | None, kwargs: dict[str, Any]) -> MetricsEndpoint:
    if endpoint is None:
        kwargs.setdefault("port", 0)
        return MetricsEndpoint(**kwargs)
    if kwargs:
        raise TypeError(
            f"serve()/run() take an endpoint or its keywords, not both (got {sorted(kwargs)})"
        )
    return endpoint


@asynccontextmanager
async def serve(
    endpoint: MetricsEndpoint | None = None, /, **kwargs: Any
) -> AsyncIterator[MetricsEndpoint]:
    """Serve ``endpoint`` (or ``MetricsEndpoint(**kwargs)``; ``port`` defaults to 0, a
    free one) for the duration of the block; yields it listening (``endpoint.url``).

    Leaving the block stops accepting, ends the ``/stream`` clients, lets requests in
    flight finish within ``shutdown_timeout_s`` and flushes the probes a last time.
    """
    ep = _endpoint(endpoint, kwargs)
    raised: BaseException | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        try:
            yield ep
        except BaseException as exc:
            # The block's own error leaves as it is, not wrapped in the task group's
            # ExceptionGroup: ``except ValueError`` around ``serve()`` must still work.
            raised = exc
        finally:
            tg.cancel_scope.cancel()
    if raised is not None:
        raise raised


async def run(
    endpoint: MetricsEndpoint | None = None,
    /,
    *,
    task_status: TaskStatus[MetricsEndpoint] = anyio.TASK_STATUS_IGNORED,
    **kwargs: Any,
) -> None:
    """Serve until cancelled: ``asyncio.create_task(run(ep))`` or ``await tg.start(run,
    ep)`` (which returns the endpoint once it listens)."""
    ep = _endpoint(endpoint, kwargs)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        task_status.started(ep)
