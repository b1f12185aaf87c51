"""Extending a MetricsEndpoint without subclassing it: a plugin object.

There are two ways to extend an endpoint, and they bring the same three things: a
subclass overrides the endpoint's hooks (``setup_routes()``, ``collectors()``,
``figures()``), or a plugin, passed as ``MetricsEndpoint(..., plugins=[...])``, implements
the methods below. A plugin suits what is written once and added to many endpoints (an
exporter, a team's standard routes); it never needs the endpoint's internals.

What each brings: Litestar route handlers, prometheus-client collectors (served in
``/metrics`` and, as figures, in the ``custom`` section of ``/metrics/json``) and free-form
figures (the ``extra`` section). Collectors follow prometheus-client's
``Collector.collect()`` protocol, so an existing exporter's collector plugs in unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler
    from prometheus_client.registry import Collector

__all__ = ("MetricsPlugin",)


class MetricsPlugin:
    """Base of endpoint plugins; override what you contribute, leave the rest."""

    #: Key of the plugin's figures in ``/metrics/json``'s ``extra`` section.
    name: str = "plugin"

    def route_handlers(self) -> Sequence[ControllerRouterHandler]:
        """Litestar route handlers added to the endpoint's app; a handler may ask for
        the endpoint's ``TickCache`` with a ``service`` parameter."""
        return ()

    def collectors(self) -> Sequence[Collector]:
        """prometheus-client collectors: ``collect()`` is called once per tick in a
        worker thread; one that raises is listed in ``errors``, the rest is served."""
        return ()

    async def figures(self) -> Mapping[str, Any]:
        """JSON-able figures for ``/metrics/json``'s ``extra.<name>``, once per tick."""
        return {}


def __dir__() -> tuple[str, ...]:
    return __all__
