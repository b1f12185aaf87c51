"""Built-in component types, by the names blueprints use."""

from __future__ import annotations

from .base import Component, Context, EmptyConfig, Input, ItemFailed, Output, Peer, Processor

__all__ = (
    "Component",
    "Context",
    "EmptyConfig",
    "Input",
    "ItemFailed",
    "Output",
    "Peer",
    "Processor",
    "component_types",
)


def component_types() -> dict[str, type[Component]]:
    """Every type a blueprint may name (``FastAPIEndpoint`` is the seed's alias of
    ``APIEndpoint``). Imported on call so that importing the package stays light."""
    from .api import APIEndpoint
    from .controller import Controller
    from .metrics import MetricsEndpoint
    from .processor import StreamProcessor
    from .production import ProductionMetricsEndpoint
    from .source import Source
    from .store import Store

    types: dict[str, type[Component]] = {
        cls.type_name: cls
        for cls in (
            APIEndpoint,
            Controller,
            MetricsEndpoint,
            ProductionMetricsEndpoint,
            StreamProcessor,
            Source,
            Store,
        )
    }
    types["FastAPIEndpoint"] = APIEndpoint
    return types
