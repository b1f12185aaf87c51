"""YAML blueprint → typed, validated model.

Validation happens all at once, before anything runs, and every error names the path of
the bad value (``system.components[2].config.port``) and keeps it, so ``validate``
catches what ``run`` would otherwise fail on halfway through starting.
"""

from __future__ import annotations

import builtins
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import yaml

from .breaker import BreakerConfig
from .components import Component, Processor, component_types
from .components.api import APIEndpoint
from .errors import BlueprintError
from .model.nesting import MAX_DEPTH
from .model.types import MAX_NAME, DeclaredName, name_problem
from .model.validation import located

__all__ = (
    "DEFAULT_MAX_COMPONENTS",
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


#: Most components a blueprint may declare unless the caller allows more
#: (``streammetrics validate|run --max-components``): a MetricsEndpoint's aggregator keeps
#: 10,000 components by default, and reading 300,000 took a minute and over a gigabyte.
DEFAULT_MAX_COMPONENTS = 10_000
#: YAML nodes (scalars, sequences, mappings) a blueprint may hold per component allowed,
#: counting an alias as the nodes it stands for; never fewer than ``MIN_NODES``.
NODES_PER_COMPONENT = 50
MIN_NODES = 100_000


class _BoundedLoader(
    yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver
):
    """PyYAML's safe loader (its composer, safe constructor and resolver; the events come
    from libyaml where PyYAML has it, ``_loader_class``), holding a document to bounds
    while it composes it, so that no hostile file costs more than a bounded time and
    memory or ends in a traceback:

    - mappings and sequences nested at most ``MAX_DEPTH`` deep (its composer recurses once
      per level, so a deeper document would end in a ``RecursionError``);
    - at most ``max_nodes`` nodes, an alias counting as every node it stands for: an
      alias is cheap to write and to compose, but everything after the composer (the
      constructor's output converted into structs) walks it expanded, so ten aliases of
      ten aliases of ... ("billion laughs") would take for ever; an alias of a node it is
      inside (a recursive structure) is refused outright;
    - at most ``max_components`` items under ``system.components``, refused at the first
      one past the bound, before the rest of the file is even read;
    - no key twice in one mapping (PyYAML would keep the last silently): the error names
      both lines. Keys are compared as written with their resolved tag; merge keys
      (``<<``) are not duplicates of the keys they bring.
    """

    def __init__(self, stream: str, *, max_components: int, max_nodes: int) -> None:
        self._read_from(stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id of an anchored node -> nodes it holds
        self._keys: list[object] = []  # the path being composed: keys and indexes
        self._max_components = max_components
        self._max_nodes = max_nodes

    def _read_from(self, stream: str) -> None:
        """Start the parser that gives the events (the subclass's)."""
        raise NotImplementedError

    if TYPE_CHECKING:  # given by the parser the subclass adds

        def peek_event(self) -> yaml.Event: ...

    def _where(self) -> str:
        path = "".join(
            f"[{k}]" if isinstance(k, int) else f".{k}" if isinstance(k, str) else ".?"
            for k in self._keys
        )
        return path.lstrip(".") or "$"

    def _refuse(self, reason: str, mark: Any, *, path: str | None = None) -> BlueprintError:
        return BlueprintError(
            f"{reason} (line {mark.line + 1}, column {mark.column + 1})",
            path=self._where() if path is None else path,
        )

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)  # type: ignore[arg-type]
            size = self._sizes.get(id(node))
            if size is None:  # its anchor's node is still being composed
                raise self._refuse(
                    f"alias *{event.anchor} refers to a node it is inside", event.start_mark
                )
            self._count(size, event)
            return node
        if (
            isinstance(parent, yaml.SequenceNode)
            and isinstance(index, int)
            and index >= self._max_components
            and self._keys == ["system", "components"]
        ):
            raise self._refuse(
                f"a blueprint may declare at most {self._max_components} components "
                "(streammetrics validate|run --max-components N allows more)",
                event.start_mark,
            )
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if collection and self._depth >= MAX_DEPTH:
            raise self._refuse(
                f"YAML nests mappings and sequences more than {MAX_DEPTH} levels deep",
                event.start_mark,
                path="$",  # the line says where; a path 64 levels long would not help
            )
        if parent is not None:
            self._keys.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        self._depth += collection
        before = self._nodes
        try:
            node = super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= collection
            if parent is not None:
                self._keys.pop()
        self._count(1, event)
        if getattr(event, "anchor", None) is not None:
            self._sizes[id(node)] = self._nodes - before
        return node

    def _count(self, nodes: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > self._max_nodes:
            raise self._refuse(
                f"YAML holds more than {self._max_nodes} nodes (aliases counted as the "
                "nodes they repeat)",
                event.start_mark,
            )

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node: yaml.MappingNode = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                raise BlueprintError(
                    f"duplicate key {key.value!r}: at line {key.start_mark.line + 1} and "
                    f"first at line {seen.start_mark.line + 1}",
                    path=self._where(),
                    value=key.value,
                )
        return node


def _value_at(data: Any, path: str) -> Any:
    """The bad value itself, found by walking ``path`` (best effort)."""
    cur = data
    for part in path.replace("]", "").replace("[", ".").split(".")[1:]:
        try:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return cur


class _PythonLoader(_BoundedLoader, yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """The bounded loader on PyYAML's own parser, written in Python."""

    def _read_from(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


@functools.cache
def _loader_class() -> builtins.type[_BoundedLoader]:
    """The bounded loader on libyaml's parser, which reads YAML about 2.5 times as fast as
    PyYAML's own (the composer, where the bounds are kept, stays PyYAML's); on PyYAML's
    own parser when PyYAML was built without libyaml."""
    try:
        from yaml._yaml import CParser
    except ImportError:  # pragma: no cover - PyYAML's wheels all have libyaml
        return _PythonLoader

    class _LibyamlLoader(_BoundedLoader, CParser):
        def _read_from(self, stream: str) -> None:
            CParser.__init__(self, stream)

    return _LibyamlLoader


def _read_yaml(text: str, max_components: int) -> Any:
    """The document of ``text``, composed within ``_BoundedLoader``'s bounds.

    Every way PyYAML fails is a ``BlueprintError``: its own errors, and the few its
    constructors let through (an integer of more digits than Python converts, a date
    that does not exist).
    """
    max_nodes = max(MIN_NODES, NODES_PER_COMPONENT * max_components)

    cls = _loader_class()

    def loader(stream: str) -> _BoundedLoader:
        return cls(stream, max_components=max_components, max_nodes=max_nodes)

    try:
        data = yaml.load(text, Loader=loader)  # type: ignore[arg-type]
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, raw
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise BlueprintError(
            f"not valid YAML (line {line}, column {column}): character "
            f"U+{exc.character:04X} is not allowed ({exc.reason})"
            if isinstance(exc.character, int)
            else f"not valid YAML (line {line}, column {column}): {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", exc)).split())  # one line
        if problem == "exceeded maximum nesting depth":
            # libyaml scans flow brackets ahead of the composer and stops at its own
            # limit (1000) before the composer reaches ours: the same fault, said alike.
            raise BlueprintError(
                f"YAML nests mappings and sequences more than {MAX_DEPTH} levels deep{where}"
            ) from None
        raise BlueprintError(f"not valid YAML{where}: {problem}") from None
    except (ValueError, OverflowError) as exc:  # int("9" * 5000), date(2024, 2, 30)
        raise BlueprintError(
            f"not valid YAML: a value cannot be read: {str(exc).split(';')[0]}"
        ) from None
    system = data.get("system") if isinstance(data, dict) else None
    components = system.get("components") if isinstance(system, dict) else None
    if isinstance(components, list) and len(components) > max_components:
        # Only through a merge key or an alias: the loader counted the items it composed.
        raise BlueprintError(
            f"a blueprint may declare at most {max_components} components; this one has "
            f"{len(components)} (streammetrics validate|run --max-components N allows more)",
            path="system.components",
        )
    return data


#: The reason msgspec gives for a ``DeclaredName`` that does not match its pattern.
_NOT_DECLARED = "Expected `str` matching regex"


def _validation_error(exc: msgspec.ValidationError, data: Any) -> BlueprintError:
    """A ``BlueprintError`` at the place msgspec names; a name that breaks a rule says
    which rule rather than quoting a regular expression."""
    path, reason = located(exc, "")
    path = path.lstrip(".") or "$"
    value = _value_at(data, "$." + path)
    if reason.startswith(_NOT_DECLARED) and isinstance(value, str):
        reason = name_problem(value) or (
            f"a name a blueprint declares is letters, digits and _ . : - only "
            f"(at most {MAX_NAME}); got {value!r}"
        )
    return BlueprintError(reason, path=path, value=value)


def parse_blueprint(
    text: str,
    *,
    source: str | None = None,
    port_offset: int | None = None,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> Blueprint:
    """Parse and validate YAML text. ``port_offset`` (or $STREAMMETRICS_PORT_OFFSET) is
    added to every non-zero ``port``, so a test can run the seed files unchanged.
    ``max_components`` bounds ``system.components``; a longer list is refused as soon as
    the reader reaches the first component past it."""
    data = _read_yaml(text, max_components)
    try:
        spec = msgspec.convert(data, _File)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, data) from None
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


def load_blueprint(
    path: str | Path,
    *,
    port_offset: int | None = None,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> Blueprint:
    """Read and validate a blueprint file (``parse_blueprint``'s options)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BlueprintError(f"cannot read blueprint: {exc.strerror}", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise BlueprintError(f"blueprint is not UTF-8: {exc.reason}", path=str(p)) from None
    return parse_blueprint(
        text, source=str(p), port_offset=port_offset, max_components=max_components
    )
