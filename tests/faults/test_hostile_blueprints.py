"""Hostile blueprints through ``streammetrics validate``: huge, aliased, duplicated, deep,
malformed. Whatever the file, ``validate`` ends with 0 or 2, one clear line and no
traceback, within a bounded time and memory."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streammetrics.blueprint import DEFAULT_MAX_COMPONENTS
from streammetrics.cli import main
from tests.support.process import cli

#: What one validation may take on a shared, loaded machine (it takes milliseconds).
EXAMPLE_S = 10.0


def _big(path: Path, components: int) -> Path:
    """A blueprint of ``components`` Sources: 300,000 make 10 MB."""
    with path.open("w", encoding="utf-8") as f:
        f.write("system:\n  name: big\n  components:\n")
        for i in range(components):
            f.write(f"  - name: c{i:07d}\n    type: Source\n")
    return path


def test_a_10_mb_blueprint_of_300000_components_is_refused_at_once(tmp_path: Path) -> None:
    f = _big(tmp_path / "big.yaml", 300_000)
    assert f.stat().st_size > 10_000_000
    started = time.perf_counter()
    r = cli("validate", str(f), timeout=60)
    took = time.perf_counter() - started
    assert (r.returncode, r.stdout) == (2, "")
    (line,) = r.stderr.splitlines()
    assert line == (
        f"streammetrics: error: {f}: system.components: a blueprint may declare at most "
        f"{DEFAULT_MAX_COMPONENTS} components (streammetrics validate|run --max-components N "
        f"allows more) (line {3 + 2 * DEFAULT_MAX_COMPONENTS + 1}, column 5)"
    )
    assert took < 30  # reading the first 10,000 only: seconds, where all took a minute


def test_max_components_lets_a_larger_blueprint_through(tmp_path: Path) -> None:
    f = _big(tmp_path / "twelve.yaml", 12)
    r = cli("validate", "--max-components", "12", str(f))
    assert (r.returncode, r.stdout) == (0, "ok: system 'big', 12 components, 0 bindings\n")
    r = cli("validate", "--max-components", "11", str(f))
    assert r.returncode == 2 and "at most 11 components" in r.stderr
    r = cli("validate", "--max-components", "0", str(f))
    assert r.returncode == 2 and "must be at least 1, got 0" in r.stderr


def test_an_alias_bomb_through_the_cli_is_one_line_and_quick(tmp_path: Path) -> None:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 12)]
    f = tmp_path / "laughs.yaml"
    f.write_text("\n".join(lines) + "\nsystem: {name: s, components: *a11}\n", encoding="utf-8")
    started = time.perf_counter()
    r = cli("validate", str(f), timeout=60)
    assert time.perf_counter() - started < 20
    assert r.returncode == 2
    (line,) = r.stderr.splitlines()
    assert "nodes (aliases counted as the nodes they repeat)" in line
    assert "Traceback" not in r.stderr


def test_a_duplicate_key_through_the_cli_names_both_lines(tmp_path: Path) -> None:
    f = tmp_path / "dup.yaml"
    f.write_text(
        "system:\n  name: a\n  components:\n    - name: x\n      type: Source\n      name: y\n",
        encoding="utf-8",
    )
    r = cli("validate", str(f))
    assert (r.returncode, r.stderr) == (
        2,
        f"streammetrics: error: {f}: system.components[0]: duplicate key 'name': "
        "at line 6 and first at line 4\n",
    )


def test_control_characters_the_error_quotes_are_escaped(tmp_path: Path) -> None:
    f = tmp_path / "esc.yaml"
    f.write_text('system: {name: s, components: [], "\\e]0;owned\\a\\v": 1}\n', encoding="utf-8")
    r = cli("validate", str(f))
    assert (r.returncode, r.stderr) == (
        2,
        f"streammetrics: error: {f}: system: Object contains unknown field "
        "`\\x1b]0;owned\\x07\\x0b`\n",
    )


# -- the fuzz -----------------------------------------------------------------------------------

KEYS = ["system", "name", "components", "type", "config", "bindings", "from_component"]
KEYS += ["to_component", "stream_name", "buffer", "port", "circuit_breaker", "<<", "x"]
TYPES = ["Source", "Store", "StreamProcessor", "Controller", "APIEndpoint", "MetricsEndpoint"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included
    | st.text(max_size=12)  # any unicode, control characters included
    | st.sampled_from([*TYPES, *KEYS, "", "9" * 5000, "0" * 300, "2024-02-30"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)
component = st.fixed_dictionaries(
    {
        "name": st.text(max_size=6) | st.sampled_from(["a", "b", "c"]),
        "type": st.sampled_from(TYPES),
    },
    optional={"config": values | st.fixed_dictionaries({}, optional={"port": values})},
)
blueprints = st.fixed_dictionaries(
    {"system": st.fixed_dictionaries({"name": st.sampled_from(["s", "a b"]) | values})},
).flatmap(
    lambda doc: st.fixed_dictionaries(
        {
            "system": st.fixed_dictionaries(
                {
                    "name": st.just(doc["system"]["name"]),
                    "components": st.lists(component, max_size=4),
                },
                optional={"bindings": st.lists(values, max_size=3)},
            )
        }
    )
)

#: Lines that make YAML hostile by itself: anchors and aliases (a bomb, a recursion, an
#: undefined one), merge keys, tags PyYAML's safe loader refuses or cannot construct,
#: directives, documents, deep nesting, tabs, a BOM, escapes of control characters.
FRAGMENTS = [
    "system:",
    "  name: s",
    "  components:",
    "    - name: a",
    "      type: Source",
    "    - {name: a, type: Store}",
    "      config: {port: 99999999999999999999999}",
    "  bindings: [{from_component: a, to_component: a}]",
    "a0: &a0 [x, x, x, x, x, x, x, x, x, x]",
    "a1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]",
    "a2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]",
    "a3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]",
    "r: &r [*r]",
    "u: *undefined",
    "<<: *a0",
    "  <<: {name: m}",
    "b: !!binary 'not base64!'",
    "o: !!python/object:os.system 'echo'",
    "t: !!timestamp 2024-13-45",
    "f: !!float 'abc'",
    "s: !!set {a, b}",
    "p: !!omap [a: 1, a: 2]",
    "? [complex, key]",
    ": value",
    "%YAML 1.1",
    "---",
    "...",
    "[" * 80 + "]" * 80,
    "{" * 70,
    "\tname: tab",
    "\ufeffsystem:",
    '  name: "a\\0b\\e[31m"',
    "n: 1e400",
    "m: .nan",
    "i: -.inf",
    "h: 0x" + "f" * 400,
    "name: " + "9" * 5000,
    "- - - - - -",
    "&a &b x",
    "!<tag:yaml.org,2002:str> [1]",
    "system: system: system:",
    "'unterminated",
    "k: [1, 2",
]
raw_yaml = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=20), min_size=1, max_size=12).map(
    "\n".join
)
documents = (
    blueprints.map(lambda d: yaml.safe_dump(d, allow_unicode=True, sort_keys=False))
    | values.map(lambda d: yaml.safe_dump(d, allow_unicode=True))
    | raw_yaml
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
)
files = documents.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=200)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _validate_in_process(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def _check(code: int, out: str, err: str, took: float, limit: float = EXAMPLE_S) -> None:
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in err
    if code == 0:
        assert out.startswith("ok: system ") and err == ""
    else:
        (line,) = err.splitlines() or [""]
        assert line.startswith("streammetrics: error: ") and out == ""
        assert line.isprintable(), line  # nothing from the file reaches the terminal raw
    assert took < limit


@FUZZ
@given(files)
def test_validate_ends_with_0_or_2_whatever_the_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        started = time.perf_counter()
        code, out, err = _validate_in_process(path)
        _check(code, out, err, time.perf_counter() - started)


@settings(FUZZ, max_examples=3)
@given(files)
def test_validate_as_a_process_ends_with_0_or_2_whatever_the_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        started = time.perf_counter()
        r = cli("validate", str(path), timeout=60)  # a hang ends the test, not the suite
        # the process's start (its imports: seconds on a loaded machine) comes on top
        _check(r.returncode, r.stdout, r.stderr, time.perf_counter() - started, EXAMPLE_S + 20)


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(FRAGMENTS[8:12]) + "\nsystem: {name: s, components: *a3}\n",
        "\n".join(FRAGMENTS),
        '  name: "a\\0b\\e[31m"',
    ],
    ids=["aliases", "every-fragment", "escapes"],
)
def test_the_hostile_fragments_alone_end_with_2(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    code, out, err = _validate_in_process(path)
    _check(code, out, err, time.perf_counter() - started)
    assert code == 2
