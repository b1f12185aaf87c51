"""The component types as a package: each registered under its blueprint names, and each
one's config checked with the path of the bad value."""

from __future__ import annotations

import pytest

from streammetrics.blueprint import parse_blueprint
from streammetrics.components.api import APIEndpoint
from streammetrics.components.controller import Controller
from streammetrics.components.processor import StreamProcessor
from streammetrics.components.source import Source
from streammetrics.components.store import Store
from streammetrics.errors import BlueprintError


@pytest.mark.parametrize(
    ("component", "path"),
    [
        ("{name: s, type: Store, config: {table: 'items; DROP'}}", "config.table"),
        ("{name: s, type: Source, config: {error_ratio: 1.5}}", "config.error_ratio"),
        ("{name: s, type: Source, config: {rate: 0}}", "config.rate"),
        ("{name: s, type: StreamProcessor, config: {variant: sort}}", "config.variant"),
        ("{name: s, type: Controller, config: {route_by: x}}", "config"),
        ("{name: s, type: APIEndpoint, config: {}}", "config"),
        ("{name: s, type: APIEndpoint, config: {port: 0, path: items}}", "config.path"),
        ("{name: s, type: APIEndpoint, config: {port: 0, path: /health}}", "config"),
        (
            "{name: s, type: StreamProcessor, "
            "config: {variant: windowing, window_size: null, window_seconds: null}}",
            "config",
        ),
    ],
)
def test_bad_configs_are_refused_with_their_path(component: str, path: str) -> None:
    with pytest.raises(BlueprintError) as info:
        parse_blueprint(f"system: {{name: x, components: [{component}]}}")
    assert info.value.path.startswith(f"system.components[0].{path}")


def test_types_are_registered_under_blueprint_names() -> None:
    from streammetrics.components import component_types

    types = component_types()
    assert types["FastAPIEndpoint"] is types["APIEndpoint"] is APIEndpoint
    for cls in (APIEndpoint, Controller, StreamProcessor, Source, Store):
        assert types[cls.type_name] is cls
