"""The Controller component: routes each item to one of its outputs.

A router delivers each item once. An item whose ``route_key`` names an output (by its
``stream_name``, else by its ``to_component``) goes there; when several outputs share
that name, they take turns. Any other item goes round-robin over all outputs, so a
router with unnamed routes is a load balancer.
"""

from __future__ import annotations

from itertools import cycle
from typing import Any, Literal

import msgspec

from .base import Context, Output, Processor

__all__ = ("Controller", "ControllerConfig", "ControllerStatistics")


class ControllerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    variant: Literal["router"] = "router"
    """How items are distributed: ``router``, the only kind, which nothing reads. Kept
    because existing blueprints name it (``variant: "router"``, as in
    ``blueprints/multi_environment.yaml``): they must validate unchanged, and another value
    is refused rather than silently ignored."""
    route_key: str = "route"
    """The field of a dict item whose value names the output it goes to."""


class ControllerStatistics(msgspec.Struct, frozen=True):
    routed: dict[str, int]
    """Items sent, per output binding key."""
    by_key: int
    """Items whose route named an output."""
    round_robin: int
    """Items that went round-robin (no route, or one that names no output)."""
    unroutable: int
    """Items dropped because the controller has no outputs."""


class Controller(Processor):
    """Sends each item down exactly one output."""

    type_name = "Controller"
    Config = ControllerConfig

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.config: ControllerConfig = ctx.config
        named: dict[str, list[Output]] = {}
        for out in ctx.outputs:
            named.setdefault(out.to_component, []).append(out)
        for out in ctx.outputs:  # stream names win over component names
            named[out.stream_name] = [o for o in ctx.outputs if o.stream_name == out.stream_name]
        self._named = {name: cycle(outs) for name, outs in named.items()}
        self._all = cycle(ctx.outputs) if ctx.outputs else None
        self._routed = {out.key: 0 for out in ctx.outputs}
        self._by_key = 0
        self._round_robin = 0
        self._unroutable = 0

    def statistics(self) -> ControllerStatistics:
        return ControllerStatistics(
            routed=dict(self._routed),
            by_key=self._by_key,
            round_robin=self._round_robin,
            unroutable=self._unroutable,
        )

    def route(self, item: Any) -> Output | None:
        """The output ``item`` goes to (None when there is none)."""
        if isinstance(item, dict):
            key = item.get(self.config.route_key)
            if isinstance(key, str):
                named = self._named.get(key)
                if named is not None:
                    self._by_key += 1
                    return next(named)
        if self._all is None:
            return None
        self._round_robin += 1
        return next(self._all)

    async def process(self, item: Any) -> Any | None:
        out = self.route(item)
        if out is None:
            self._unroutable += 1
            return None
        await self.ctx.send(item, [out])
        self._routed[out.key] += 1
        return None
