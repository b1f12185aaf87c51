"""A real MetricsEndpoint behind a real server that fails on purpose for the first
requests to /events (busy, rate-limited, answer lost, or stalled until the test lets go):
what the HTTP clients' retries and interruptions are tested against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio

from streammetrics.components.metrics import MetricsEndpoint
from streammetrics.http.server import serve


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    fold_first: bool = False
    """Let the endpoint fold the batch, then answer ``status``: a lost answer."""
    body: bytes = b'{"error": "planned"}'
    hold: anyio.Event | None = None
    """Read the request, then answer only once this is set: a server that stalls."""


class Flaky:
    """ASGI wrapper: the next requests to /events meet the planned faults, in order."""

    def __init__(self, app: Any, plan: list[Fault]) -> None:
        self.app = app
        self.plan = plan
        self.requests = 0
        self.held = anyio.Event()
        """Set once a request meets a ``hold`` fault (it is then stalled)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the endpoint's own server runs its lifespan
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.requests += 1
        if scope["path"] != "/events" or not self.plan:
            await self.app(scope, receive, send)
            return
        fault = self.plan.pop(0)
        if fault.fold_first:

            async def swallow(_message: Any) -> None:
                pass

            await self.app(scope, receive, swallow)
        else:
            while (await receive()).get("more_body"):
                pass
        if fault.hold is not None:
            self.held.set()
            await fault.hold.wait()
        headers = [(k.encode(), v.encode()) for k, v in fault.headers.items()]
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": fault.body})


@asynccontextmanager
async def flaky_endpoint(plan: list[Fault]) -> AsyncIterator[tuple[MetricsEndpoint, str, Flaky]]:
    ep = MetricsEndpoint(name="metrics", port=0)
    flaky = Flaky(ep.app, plan)
    async with anyio.create_task_group() as tg:
        await tg.start(ep.run)
        port = await tg.start(
            partial(serve, flaky, host="127.0.0.1", port=0, component="flaky", shutdown_timeout_s=1)
        )
        yield ep, f"http://127.0.0.1:{port}", flaky
        tg.cancel_scope.cancel()
