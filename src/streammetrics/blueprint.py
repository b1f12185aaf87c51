"""YAML blueprint → typed, validated model.

Validation happens all at once, before anything runs, and every error names the path of
the bad value (``system.components[2].config.port``) and keeps it, so ``validate``
catches what ``run`` would otherwise fail on halfway through starting.
"""

from __future__ import annotations

import builtins
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from .breaker import BreakerConfig
from .components import Component, Processor, component_types
from .components.api import APIEndpoint
from .errors import BlueprintError
from .model.nesting import MAX_DEPTH
from .model.types import DeclaredName
from .model.validation import located

__all__ = (
    "BindingSpec",
    "Blueprint",
    "ComponentDef",
    "ComponentSpec",
    "load_blueprint",
    "parse_blueprint",
)

PORT_OFFSET_ENV = "STREAMMETRICS_PORT_OFFSET"


class ComponentSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: DeclaredName
    """Unique within the system; used as the ``component`` label."""
    type: str
    """A component type: APIEndpoint (alias FastAPIEndpoint), StreamProcessor, Controller,
    Store, Source, MetricsEndpoint."""
    config: dict[str, Any] = {}
    """Validated against the type's ``Config`` struct."""


class BindingSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    from_component: DeclaredName
    to_component: DeclaredName
    stream_name: DeclaredName = "input"
    buffer: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    """Capacity of the binding's queue; a full queue makes the sender wait (backpressure)."""

    @property
    def key(self) -> str:
        return f"{self.from_component}->{self.to_component}:{self.stream_name}"


class SystemSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: DeclaredName
    components: list[ComponentSpec]
    bindings: list[BindingSpec] = []


class _File(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    system: SystemSpec


@dataclass(frozen=True)
class ComponentDef:
    """A component as it will run: its spec, type class and validated config."""

    name: str
    type: str
    cls: builtins.type[Component]
    config: Any
    index: int
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    """``config.circuit_breaker``: used for components that consume items and for an
    APIEndpoint's sends."""


@dataclass(frozen=True)
class Blueprint:
    name: str
    components: tuple[ComponentDef, ...]
    bindings: tuple[BindingSpec, ...]
    source: str | None = None

    def component(self, name: str) -> ComponentDef:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def breaker_kind(self, name: str) -> Literal["intake", "sends"] | None:
        """What of ``name`` runs behind a circuit breaker: the ``intake`` of a component
        that consumes items from a binding, the ``sends`` of an APIEndpoint with a binding
        out; None without an enabled ``circuit_breaker`` or without that binding.

        One answer for both sides: the harness builds the breakers from it, and a
        MetricsEndpoint lists exactly these components under ``circuit_breakers``
        (closed before their first transition; a component without one not at all)."""
        c = self.component(name)
        if not c.breaker.enabled:
            return None
        if issubclass(c.cls, Processor) and any(b.to_component == name for b in self.bindings):
            return "intake"
        if issubclass(c.cls, APIEndpoint) and any(b.from_component == name for b in self.bindings):
            return "sends"
        return None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing mappings and sequences nested deeper than
    ``MAX_DEPTH``: its composer recurses once per level, so a deep document would end in
    a ``RecursionError`` (a traceback) rather than in a ``BlueprintError``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)  # a scalar or an alias: no deeper
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise BlueprintError(
                f"YAML nests mappings and sequences more than {MAX_DEPTH} levels deep "
                f"(line {mark.line + 1}, column {mark.column + 1})"
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _value_at(data: Any, path: str) -> Any:
    """The bad value itself, found by walking ``path`` (best effort)."""
    cur = data
    for part in path.replace("]", "").replace("[", ".").split(".")[1:]:
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return cur


def parse_blueprint(
    text: str, *, source: str | None = None, port_offset: int | None = None
) -> Blueprint:
    """Parse and validate YAML text. ``port_offset`` (or $STREAMMETRICS_PORT_OFFSET) is
    added to every non-zero ``port``, so a test can run the seed files unchanged."""
    try:
        data = yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise BlueprintError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    try:
        spec = msgspec.convert(data, _File)
    except msgspec.ValidationError as exc:
        path, reason = located(exc, "")
        path = path.lstrip(".") or "$"
        raise BlueprintError(reason, path=path, value=_value_at(data, "$." + path)) from None
    if port_offset is None:
        raw = os.environ.get(PORT_OFFSET_ENV, "0")
        try:
            port_offset = int(raw)
        except ValueError:
            raise BlueprintError(
                f"{PORT_OFFSET_ENV} must be an integer, got {raw!r}",
                path=PORT_OFFSET_ENV,
                value=raw,
            ) from None
    types = component_types()
    system = spec.system
    seen: dict[str, int] = {}
    ports: dict[int, str] = {}
    defs: list[ComponentDef] = []
    for i, c in enumerate(system.components):
        at = f"system.components[{i}]"
        if c.name in seen:
            raise BlueprintError(
                f"duplicate component name {c.name!r} (first at system.components[{seen[c.name]}])",
                path=f"{at}.name",
                value=c.name,
            )
        seen[c.name] = i
        cls = types.get(c.type)
        if cls is None:
            known = ", ".join(sorted(types))
            raise BlueprintError(
                f"unknown component type {c.type!r}; known types: {known}",
                path=f"{at}.type",
                value=c.type,
            )
        cfg_data = dict(c.config)
        breaker = BreakerConfig()
        if "circuit_breaker" in cfg_data:
            raw_breaker = cfg_data.pop("circuit_breaker")
            if not issubclass(cls, (Processor, APIEndpoint)):
                # A breaker guards a component's intake of items, or an APIEndpoint's sends
                # downstream; one on any other component would be silently ignored, which
                # is worse than an error.
                raise BlueprintError(
                    f"{c.type} {c.name!r} neither consumes items from a binding nor takes "
                    "them in over HTTP, so a circuit_breaker cannot guard it (it applies to "
                    "StreamProcessor, Controller, Store and APIEndpoint)",
                    path=f"{at}.config.circuit_breaker",
                    value=raw_breaker,
                )
            try:
                breaker = msgspec.convert(raw_breaker, BreakerConfig)
            except msgspec.ValidationError as exc:
                path, reason = located(exc, f"{at}.config.circuit_breaker")
                inner = "$" + path[len(f"{at}.config.circuit_breaker") :]
                raise BlueprintError(
                    reason, path=path, value=_value_at(raw_breaker, inner)
                ) from None
        port = cfg_data.get("port")
        if port_offset and isinstance(port, int) and not isinstance(port, bool) and port > 0:
            cfg_data["port"] = port + port_offset
        try:
            config = msgspec.convert(cfg_data, cls.Config)
        except msgspec.ValidationError as exc:
            path, reason = located(exc, f"{at}.config")
            raise BlueprintError(
                reason, path=path, value=_value_at(cfg_data, "$" + path[len(f"{at}.config") :])
            ) from None
        if cls.serves_port:
            p = getattr(config, "port", 0)
            if p and p in ports:
                raise BlueprintError(
                    f"port {p} is already used by component {ports[p]!r}",
                    path=f"{at}.config.port",
                    value=p,
                )
            if p:
                ports[p] = c.name
        defs.append(ComponentDef(c.name, c.type, cls, config, i, breaker))
    keys: set[str] = set()
    for j, b in enumerate(system.bindings):
        at = f"system.bindings[{j}]"
        for end in ("from_component", "to_component"):
            target = getattr(b, end)
            if target not in seen:
                raise BlueprintError(
                    f"binding names component {target!r}, which the system does not have",
                    path=f"{at}.{end}",
                    value=target,
                )
        if b.key in keys:
            raise BlueprintError(f"duplicate binding {b.key}", path=at, value=b.key)
        keys.add(b.key)
    return Blueprint(system.name, tuple(defs), tuple(system.bindings), source)


def load_blueprint(path: str | Path, *, port_offset: int | None = None) -> Blueprint:
    """Read and validate a blueprint file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BlueprintError(f"cannot read blueprint: {exc.strerror}", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise BlueprintError(f"blueprint is not UTF-8: {exc.reason}", path=str(p)) from None
    return parse_blueprint(text, source=str(p), port_offset=port_offset)
