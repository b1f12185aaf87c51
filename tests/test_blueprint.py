"""Blueprint parsing and validation: every bad blueprint names the path of the bad value
(``system.components[0].config.port``) and keeps the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streammetrics.blueprint import (
    PORT_OFFSET_ENV,
    BindingSpec,
    Blueprint,
    load_blueprint,
    parse_blueprint,
)
from streammetrics.breaker import BreakerConfig
from streammetrics.errors import BlueprintError, StreamMetricsError
from streammetrics.model.nesting import MAX_DEPTH
from tests.support.process import cli

# The seed's "Basic Metrics Endpoint" example (quotes and blank line kept).
BASIC = """\
system:
  name: "monitored_system"
  components:
    - name: "app_server"
      type: "FastAPIEndpoint"
      config:
        port: 8000
    - name: "data_store"
      type: "Store"
    - name: "system_metrics"
      type: "MetricsEndpoint"
      config:
        port: 9000

  bindings:
    - from_component: "app_server"
      to_component: "data_store"
      stream_name: "input"
"""

PRODUCTION = """\
system:
  name: "production_monitoring"
  components:
    - name: "public_api"
      type: "FastAPIEndpoint"
      config:
        port: 80
    - name: "business_logic"
      type: "StreamProcessor"
      config:
        variant: "windowing"
    - name: "persistent_store"
      type: "Store"
    - name: "metrics_server"
      type: "MetricsEndpoint"
      config:
        port: 9090
    - name: "health_check"
      type: "MetricsEndpoint"
      config:
        port: 8080

  bindings:
    - from_component: "public_api"
      to_component: "business_logic"
      stream_name: "input"
    - from_component: "business_logic"
      to_component: "persistent_store"
      stream_name: "input"
"""

MULTI_ENV = """\
system:
  name: "multi_env_metrics"
  components:
    - name: "app_cluster"
      type: "Controller"
      config:
        variant: "router"
    - name: "production_metrics"
      type: "MetricsEndpoint"
      config:
        port: 9000
    - name: "staging_metrics"
      type: "MetricsEndpoint"
      config:
        port: 9001
    - name: "development_metrics"
      type: "MetricsEndpoint"
      config:
        port: 9002
"""


@pytest.fixture(autouse=True)
def _no_env_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_OFFSET_ENV, raising=False)


def _error(text: str, **kw: Any) -> BlueprintError:
    with pytest.raises(BlueprintError) as ei:
        parse_blueprint(text, **kw)
    err = ei.value
    assert isinstance(err, StreamMetricsError)
    assert f"at `{err.path}`" in str(err)  # the message names the place
    return err


# -- good blueprints ------------------------------------------------------------------------


def test_seed_basic_example() -> None:
    bp = parse_blueprint(BASIC, source="basic.yaml")
    assert isinstance(bp, Blueprint)
    assert (bp.name, bp.source) == ("monitored_system", "basic.yaml")
    assert [(c.name, c.type, c.index) for c in bp.components] == [
        ("app_server", "FastAPIEndpoint", 0),
        ("data_store", "Store", 1),
        ("system_metrics", "MetricsEndpoint", 2),
    ]
    assert bp.component("app_server").cls.__name__ == "APIEndpoint"  # the seed's alias
    assert bp.component("app_server").config.port == 8000
    assert bp.component("system_metrics").config.port == 9000
    assert bp.bindings == (BindingSpec("app_server", "data_store", "input"),)
    assert bp.bindings[0].key == "app_server->data_store:input"
    assert bp.bindings[0].buffer == 1000
    with pytest.raises(KeyError):
        bp.component("nope")


@pytest.mark.parametrize("text", [PRODUCTION, MULTI_ENV])
def test_other_seed_examples(text: str) -> None:
    bp = parse_blueprint(text)
    assert len(bp.components) >= 4


def test_packaged_demo_blueprint_is_valid() -> None:
    import streammetrics

    demo = Path(streammetrics.__file__).parent / "blueprints" / "demo.yaml"
    bp = load_blueprint(demo)
    assert bp.name == "demo_system"
    assert bp.source == str(demo)


# -- bad blueprints -------------------------------------------------------------------------


def test_not_yaml_names_the_line() -> None:
    err = _error("system:\n  name: x\n  components: [\n    - a\n")
    assert "not valid YAML" in str(err)
    assert "line 4" in str(err)
    err = _error("system: {name: x\n")
    assert "line 2" in str(err)


# BASIC is 2 levels deep where ``x`` goes: the top mapping, and ``system``.
X_LINE = BASIC.count("\n") + 1


def _deep_flow(levels: int) -> str:
    """BASIC with ``x`` under ``system``: sequences in flow style, the whole ``levels`` deep."""
    inner = levels - 2
    return BASIC + "  x: " + "[" * inner + "]" * inner + "\n"


def _deep_block(levels: int) -> str:
    """BASIC with ``x`` under ``system``: mappings in block style, the whole ``levels`` deep."""
    lines = [f"{'  ' * (j + 2)}a:" for j in range(levels - 3)]
    return BASIC + "  x:\n" + "\n".join(lines) + f"\n{'  ' * (levels - 1)}a: 1\n"


@pytest.mark.parametrize("deep", [_deep_flow, _deep_block])
def test_yaml_nested_deeper_than_max_depth_names_the_line(deep: Any) -> None:
    err = _error(deep(MAX_DEPTH + 1))
    assert err.path == "$"
    assert f"nests mappings and sequences more than {MAX_DEPTH} levels deep" in err.reason
    # flow: the 63rd "[" of x's line; block: the mapping that starts 63 lines below x
    line = X_LINE if deep is _deep_flow else X_LINE + MAX_DEPTH - 1
    assert f"(line {line}, column " in err.reason
    # at the limit the document is read, and validated as usual: x is not a field
    err = _error(deep(MAX_DEPTH))
    assert (err.path, err.reason) == ("system", "Object contains unknown field `x`")


def test_validate_exits_2_on_a_deep_yaml_with_one_clear_line(tmp_path: Path) -> None:
    """100,000 levels would exhaust PyYAML's recursion (a traceback, exit 1): the CLI
    says what is wrong in one line and exits 2."""
    f = tmp_path / "deep.yaml"
    f.write_text(_deep_flow(100_000), encoding="utf-8")
    r = cli("validate", str(f), timeout=60)
    assert (r.returncode, r.stdout) == (2, "")
    (line,) = r.stderr.splitlines()
    assert line.startswith("streammetrics: error: ")
    assert f"more than {MAX_DEPTH} levels deep (line {X_LINE}, column " in line
    assert "Traceback" not in r.stderr


def test_missing_system_name() -> None:
    err = _error("system:\n  components: []\n")
    assert err.path == "system"
    assert "`name`" in str(err)
    assert err.value == {"components": []}


@pytest.mark.parametrize("text", ["", "foo: 1\n", "- a\n- b\n"])
def test_not_a_system(text: str) -> None:
    err = _error(text)
    assert err.path == "$"


def test_unknown_type_lists_known_types() -> None:
    err = _error(BASIC.replace('type: "Store"', 'type: "Stor"'))
    assert err.path == "system.components[1].type"
    assert err.value == "Stor"
    msg = str(err)
    assert "'Stor'" in msg
    for known in (
        "APIEndpoint",
        "FastAPIEndpoint",
        "StreamProcessor",
        "Controller",
        "Store",
        "Source",
        "MetricsEndpoint",
    ):
        assert known in msg


def test_duplicate_component_name() -> None:
    err = _error(BASIC.replace('name: "data_store"', 'name: "app_server"'))
    assert err.path == "system.components[1].name"
    assert err.value == "app_server"
    assert "system.components[0]" in str(err)  # where the first one is


def test_bad_component_name() -> None:
    err = _error(BASIC.replace('name: "data_store"', 'name: "data store"'))
    assert err.path == "system.components[1].name"
    assert err.value == "data store"


@pytest.mark.parametrize("end", ["from_component", "to_component"])
def test_binding_to_a_missing_component(end: str) -> None:
    target = "app_server" if end == "from_component" else "data_store"
    err = _error(BASIC.replace(f'{end}: "{target}"', f'{end}: "ghost"'))
    assert err.path == f"system.bindings[0].{end}"
    assert err.value == "ghost"
    assert "'ghost'" in str(err)


@pytest.mark.parametrize(
    ("port", "value"),
    [('"abc"', "abc"), ("-1", -1), ("70000", 70000), ("true", True), ("1.5", 1.5)],
)
@pytest.mark.parametrize(("index", "original"), [(0, "8000"), (2, "9000")])
def test_a_port_that_is_not_a_port(port: str, value: object, index: int, original: str) -> None:
    err = _error(BASIC.replace(f"port: {original}", f"port: {port}"))
    assert err.path == f"system.components[{index}].config.port"
    assert err.value == value
    assert type(err.value) is type(value)  # True stays a bool, not 1


def test_missing_required_port() -> None:
    err = _error(BASIC.replace("      config:\n        port: 9000\n", ""))
    assert err.path == "system.components[2].config"
    assert "port" in str(err)


def test_two_servers_on_the_same_port() -> None:
    err = _error(BASIC.replace("port: 9000", "port: 8000"))
    assert err.path == "system.components[2].config.port"
    assert err.value == 8000
    assert "'app_server'" in str(err)


def test_port_zero_is_free_for_every_server() -> None:
    bp = parse_blueprint(BASIC.replace("port: 9000", "port: 0").replace("port: 8000", "port: 0"))
    assert [c.config.port for c in bp.components if hasattr(c.config, "port")] == [0, 0]


def test_unknown_key_in_a_component() -> None:
    err = _error(BASIC.replace('type: "Store"', 'type: "Store"\n      confg: {}'))
    assert err.path == "system.components[1]"
    assert "`confg`" in str(err)
    assert err.value == {"name": "data_store", "type": "Store", "confg": {}}


def test_unknown_key_in_a_config() -> None:
    err = _error(BASIC.replace("port: 9000", "port: 9000\n        prot: 9001"))
    assert err.path == "system.components[2].config"
    assert "`prot`" in str(err)
    assert err.value == {"port": 9000, "prot": 9001}


def test_a_circuit_breaker_on_the_seeds_fastapi_endpoint_is_taken(tmp_path: Path) -> None:
    text = BASIC.replace(
        "port: 8000", "port: 8000\n        circuit_breaker: {failure_threshold: 2, window_s: 10}"
    )
    api = parse_blueprint(text).component("app_server")
    assert api.breaker == BreakerConfig(failure_threshold=2, window_s=10)
    assert api.config.port == 8000  # the rest of the config is the endpoint's, as before
    f = tmp_path / "bp.yaml"
    f.write_text(text, encoding="utf-8")
    r = cli("validate", str(f))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith("ok: system 'monitored_system', 3 components")


def test_a_circuit_breaker_on_a_metrics_endpoint_is_refused() -> None:
    err = _error(BASIC.replace("port: 9000", "port: 9000\n        circuit_breaker: {}"))
    assert err.path == "system.components[2].config.circuit_breaker"
    assert err.value == {}
    assert "MetricsEndpoint 'system_metrics' neither consumes items" in str(err)


def test_unknown_key_in_system_or_binding() -> None:
    err = _error(BASIC + "  extra: 1\n")
    assert err.path == "system"
    assert "`extra`" in str(err)
    err = _error(BASIC.replace('stream_name: "input"', 'stream_nme: "input"'))
    assert err.path == "system.bindings[0]"
    assert "`stream_nme`" in str(err)


def test_duplicate_binding() -> None:
    text = BASIC + "    - {from_component: app_server, to_component: data_store}\n"
    err = _error(text)  # stream_name defaults to "input": the same binding again
    assert err.path == "system.bindings[1]"
    assert err.value == "app_server->data_store:input"
    # the same ends on another stream are a different binding
    parse_blueprint(
        BASIC + "    - {from_component: app_server, to_component: data_store, stream_name: other}\n"
    )


def test_bad_binding_buffer() -> None:
    err = _error(BASIC.replace('stream_name: "input"', 'stream_name: "input"\n      buffer: 0'))
    assert err.path == "system.bindings[0].buffer"
    assert err.value == 0


# -- port offset ----------------------------------------------------------------------------


def _ports(bp: Blueprint) -> dict[str, int]:
    return {c.name: c.config.port for c in bp.components if hasattr(c.config, "port")}


def test_port_offset_argument() -> None:
    bp = parse_blueprint(BASIC, port_offset=1000)
    assert _ports(bp) == {"app_server": 9000, "system_metrics": 10000}
    # port 0 (ephemeral) is not offset
    bp = parse_blueprint(BASIC.replace("port: 9000", "port: 0"), port_offset=1000)
    assert _ports(bp) == {"app_server": 9000, "system_metrics": 0}


def test_port_offset_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORT_OFFSET_ENV, "20000")
    assert _ports(parse_blueprint(BASIC)) == {"app_server": 28000, "system_metrics": 29000}
    # the argument wins over the environment
    assert _ports(parse_blueprint(BASIC, port_offset=1)) == {
        "app_server": 8001,
        "system_metrics": 9001,
    }


def test_port_offset_env_must_be_an_integer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORT_OFFSET_ENV, "ten")
    err = _error(BASIC)
    assert err.path == PORT_OFFSET_ENV
    assert err.value == "ten"


def test_port_offset_past_the_range_is_an_error() -> None:
    err = _error(BASIC, port_offset=60000)
    assert err.path == "system.components[0].config.port"
    assert err.value == 68000


def test_port_offset_keeps_clashes() -> None:
    err = _error(BASIC.replace("port: 9000", "port: 8000"), port_offset=5)
    assert err.value == 8005


def test_offset_does_not_turn_a_bad_port_into_a_good_one() -> None:
    err = _error(BASIC.replace("port: 8000", "port: -1"), port_offset=100)
    assert err.value == -1
    err = _error(BASIC.replace("port: 8000", "port: true"), port_offset=100)
    assert err.value is True


# -- files ----------------------------------------------------------------------------------


def test_load_blueprint_file(tmp_path: Path) -> None:
    f = tmp_path / "bp.yaml"
    f.write_text(BASIC, encoding="utf-8")
    assert load_blueprint(f, port_offset=1).bindings[0].key == "app_server->data_store:input"
    assert _ports(load_blueprint(str(f), port_offset=1))["app_server"] == 8001


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(BlueprintError) as ei:
        load_blueprint(missing)
    assert ei.value.path == str(missing)
    assert "cannot read" in str(ei.value)


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(BASIC.replace("monitored_system", "syst\xe8me").encode("latin-1"))
    with pytest.raises(BlueprintError) as ei:
        load_blueprint(f)
    assert ei.value.path == str(f)
    assert "UTF-8" in str(ei.value)


# -- names, duplicate keys, aliases and the component bound ------------------------------------


@pytest.mark.parametrize(
    ("escaped", "char", "said"),
    [
        ("\\0", "\0", "U+0000 (a control character)"),
        ("\\e[31m", "\x1b[31m", "U+001B (a control character)"),
        ("\\t", "\t", "U+0009 (a control character)"),
        ("\\u200b", "\u200b", "U+200B (ZERO WIDTH SPACE)"),
    ],
)
def test_blueprint_names_with_control_characters_say_which(
    escaped: str, char: str, said: str
) -> None:
    """YAML's double-quoted escapes are the one way to write such a character (PyYAML
    refuses a raw one): the name rule says which character it is."""
    text = BASIC.replace('"data_store"', f'"data{escaped}store"', 1)
    err = _error(text)
    assert err.path == "system.components[1].name"
    assert err.value == f"data{char}store"
    assert err.reason == f"a name must be printable characters only; character 4 is {said}"


def test_a_printable_name_outside_the_declared_charset_says_the_charset() -> None:
    err = _error(BASIC.replace('"monitored_system"', '"monitored system"'))
    assert err.path == "system.name"
    assert err.reason == (
        "a name a blueprint declares is letters, digits and _ . : - only (at most 200); "
        "got 'monitored system'"
    )


def test_a_duplicate_key_names_both_lines() -> None:
    text = BASIC.replace('      type: "Store"\n', '      type: "Store"\n      type: "Source"\n')
    err = _error(text)
    line = text.splitlines().index('      type: "Source"') + 1
    assert err.reason == f"duplicate key 'type': at line {line} and first at line {line - 1}"
    assert (err.path, err.value) == ("system.components[1]", "type")


def test_a_duplicate_top_level_key_is_refused_too() -> None:
    err = _error(BASIC + "system:\n  name: other\n  components: []\n")
    assert err.reason == f"duplicate key 'system': at line {X_LINE} and first at line 1"
    assert err.path == "$"


def test_merge_keys_are_not_duplicates_of_the_keys_they_bring() -> None:
    text = (
        "defaults: &store {type: Store, name: base}\n"
        "system:\n  name: s\n  components:\n    - <<: *store\n      name: db\n"
    )
    err = _error(text)  # the merge itself is fine: only the extra top-level key is not
    assert (err.path, err.reason) == ("$", "Object contains unknown field `defaults`")
    bp = parse_blueprint(
        "system:\n  name: s\n  components:\n"
        "    - &one {name: db, type: Store}\n    - <<: *one\n      name: db2\n"
    )
    assert [(c.name, c.type) for c in bp.components] == [("db", "Store"), ("db2", "Store")]


def _laughs(levels: int, width: int = 10) -> str:
    """Each anchor a list of ``width`` aliases of the one before: ``width ** levels``
    scalars once expanded, from a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nsystem: {{name: s, components: [], x: *l{levels - 1}}}\n"


def test_an_alias_bomb_is_refused_quickly_naming_the_line() -> None:
    import time

    text = _laughs(9)  # a billion scalars expanded
    started = time.perf_counter()
    err = _error(text)
    assert time.perf_counter() - started < 5
    assert "YAML holds more than 500000 nodes (aliases counted as the nodes they repeat)" in (
        err.reason
    )
    assert "(line 6, column " in err.reason  # l5: the first level past the bound
    assert err.path == "l5"


def test_aliases_within_the_bound_are_read_as_usual() -> None:
    err = _error(_laughs(3))  # a thousand scalars: read, then x is not a field
    assert (err.path, err.reason) == ("$", "Object contains unknown field `l0`")


def test_a_recursive_alias_is_refused() -> None:
    err = _error("system: &s {name: s, components: [], x: *s}\n")
    assert err.reason == "alias *s refers to a node it is inside (line 1, column 41)"
    assert err.path == "system"


def _components(n: int) -> str:
    return "system:\n  name: s\n  components:\n" + "".join(
        f"    - name: c{i}\n      type: Source\n" for i in range(n)
    )


def test_components_past_the_bound_are_refused_at_the_first_one_past_it() -> None:
    assert len(parse_blueprint(_components(5), max_components=5).components) == 5
    err = _error(_components(6), max_components=5)
    assert err.path == "system.components"
    assert err.reason == (
        "a blueprint may declare at most 5 components (streammetrics validate|run "
        "--max-components N allows more) (line 14, column 7)"
    )


def test_the_default_component_bound_is_ten_thousand() -> None:
    from streammetrics.blueprint import DEFAULT_MAX_COMPONENTS

    assert DEFAULT_MAX_COMPONENTS == 10_000
    err = _error(_components(DEFAULT_MAX_COMPONENTS + 1))
    assert "at most 10000 components" in err.reason
    assert f"(line {3 + 2 * DEFAULT_MAX_COMPONENTS + 1}, column 7)" in err.reason


def test_components_brought_by_an_alias_count_against_the_bound() -> None:
    text = "c: &c [{name: a, type: Source}, {name: b, type: Source}, {name: d, type: Source}]\n"
    err = _error(text + "system: {name: s, components: *c}\n", max_components=2)
    assert err.path == "system.components"
    assert err.reason == (
        "a blueprint may declare at most 2 components; this one has 3 "
        "(streammetrics validate|run --max-components N allows more)"
    )


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("9" * 5000, "not valid YAML: a value cannot be read: Exceeds the limit (4300 digits)"),
        ("2024-02-30", "not valid YAML: a value cannot be read: day is out of range for month"),
    ],
)
def test_values_pyyaml_cannot_construct_are_blueprint_errors(value: str, said: str) -> None:
    err = _error(f"system:\n  name: {value}\n  components: []\n")
    assert err.reason.startswith(said)
