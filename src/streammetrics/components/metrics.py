"""The MetricsEndpoint component: a binding consumer that folds the system's events
into its own aggregates and serves them over HTTP.

Each MetricsEndpoint has its own ``Aggregator`` subscribed to the bus, so several
endpoints in one blueprint (the seed's multi-environment example) each observe their
own subset (``config.components``) and serve their own port. When it is the
``to_component`` of a binding it also consumes that stream, counting each message as
an item it processed.
"""

from __future__ import annotations

from contextlib import suppress
from functools import partial
from typing import Annotated, Any, Literal

import anyio
import msgspec
from anyio.abc import TaskStatus

from ..aggregator import Aggregator
from ..alerts import AlertEngine, AlertRule
from ..errors import HarnessUnavailableError
from ..events import Event
from ..health import HealthConfig
from .base import Component, Context, Input

__all__ = ("MetricsEndpoint", "MetricsEndpointConfig")

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class MetricsEndpointConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    port: Port
    """Port of the metrics API (required; 0 picks a free one)."""
    host: str = "127.0.0.1"
    """Interface to bind; loopback unless the blueprint says otherwise."""
    components: list[str] | None = None
    """Observe only these components; all of the system's (and external ones) when null."""
    tick_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    """How often snapshots (and the Prometheus text) may be rebuilt."""
    window: Literal[10, 60, 300] = 60
    """The default rate window in seconds (a request may ask for another)."""
    max_components: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10_000
    """Components beyond this many are rejected (label-cardinality guard)."""
    health: HealthConfig = HealthConfig()
    """Thresholds of the health judgement."""
    alerts: list[AlertRule] = []
    """Alert rules beside the built-in set: ``{name, expr, for, level, component}``."""
    builtin_alerts: bool = True
    """Evaluate the built-in rules (ComponentDown, HighErrorRate, CircuitBreakerOpen…)."""
    alert_retention_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    """How long a resolved alert stays visible in ``/alerts``."""


class MetricsEndpoint(Component):
    """Serves `/`, `/health`, `/metrics`, `/metrics/json`, `/alerts`, `/components`."""

    type_name = "MetricsEndpoint"
    Config = MetricsEndpointConfig
    serves_port = True

    def __init__(self, ctx: Context) -> None:
        from ..http.app import create_app
        from ..http.service import MetricsService
        from ..process import ProcessSampler

        super().__init__(ctx)
        cfg: MetricsEndpointConfig = ctx.config
        self.config = cfg
        self.aggregator = Aggregator(
            observe=cfg.components,
            max_components=cfg.max_components,
            health=cfg.health,
            view=cfg.window,
        )
        for c in ctx.blueprint.components:
            if self.aggregator.observes(c.name):
                self.aggregator.register_component(c.name, c.type)
        for key, out in ctx.system_outputs.items():
            src = key.split("->", 1)[0]
            if self.aggregator.observes(src) or self.aggregator.observes(out.to_component):
                self.aggregator.register_stream(
                    key,
                    from_component=src,
                    to_component=out.to_component,
                    stream_name=out.stream_name,
                    buffer=out.buffer,
                )
        self.alerts = AlertEngine(
            cfg.alerts,
            health=cfg.health,
            builtin=cfg.builtin_alerts,
            resolved_retention_s=cfg.alert_retention_s,
        )
        self.service = MetricsService(
            self.aggregator,
            tick_s=cfg.tick_s,
            sampler=ProcessSampler(),
            name=ctx.name,
            judge=self.alerts,
        )
        self.app = create_app(self.service)
        self.port: int | None = None

    async def run(self, *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        from ..http.server import serve

        cfg = self.config
        bus = self.ctx.bus
        bus.subscribe(self.aggregator)
        # Its own "started" went out before it listened: fold it here.
        self.aggregator.fold_events([Event(self.name, "started", timestamp=self.ctx.wall())])
        try:
            async with anyio.create_task_group() as tg:
                for inp in self.ctx.inputs:
                    tg.start_soon(self._consume, inp)
                self.port = await tg.start(
                    partial(serve, self.app, host=cfg.host, port=cfg.port, component=self.name)
                )
                tg.start_soon(self._tick)
                task_status.started((cfg.host, self.port))
        finally:
            bus.flush()
            bus.unsubscribe(self.aggregator)

    async def _tick(self) -> None:
        """Build a snapshot every tick even when nobody asks, so that alert rules' ``for``
        durations run on time, as Prometheus evaluates rules without a reader."""
        while True:
            # Unavailable: the routes say so; rules resume when the harness is back.
            with suppress(HarnessUnavailableError):
                await self.service.snapshot()
            await anyio.sleep(self.config.tick_s)

    async def _consume(self, inp: Input) -> None:
        probe = self.ctx.probe
        async with inp.stream:
            async for _item in inp.stream:
                probe.processed()
