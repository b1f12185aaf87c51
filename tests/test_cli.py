"""The command line, as a user runs it in a real subprocess: ``validate``, the parser, and
every error that becomes exit code 2 with one clear line (systems that run and serve:
``scenarios/test_cli_run.py``)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from tests.support.paths import BLUEPRINTS
from tests.support.process import cli


def test_validate_ok_for_every_shipped_blueprint() -> None:
    for path in sorted(BLUEPRINTS.glob("*.yaml")):
        r = cli("validate", str(path))
        assert r.returncode == 0, (path, r.stderr)
        assert r.stdout.startswith("ok: system ")


def test_validate_bad_blueprint_exits_2_naming_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "system:\n  name: s\n  components:\n"
        "    - {name: a, type: Store}\n"
        "    - {name: m, type: MetricsEndpoint, config: {port: 'abc'}}\n"
    )
    r = cli("validate", str(bad))
    assert r.returncode == 2
    assert "system.components[1].config.port" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    r = cli("validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "cannot read blueprint" in r.stderr


def test_port_in_use_exits_2_naming_component_host_and_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("run", str(BLUEPRINTS / "basic.yaml"), "--port-offset", str(port - 9000))
    assert r.returncode == 2
    assert "system_metrics" in r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


# -- the parser: help, unknown flags, option values ----------------------------------------


def _entries_without_help(page: str) -> list[str]:
    """The argument and option entries of a ``--help`` page that carry no help text.

    An entry is a line indented 2 (or 4, a sub-command) in the ``positional arguments`` /
    ``options`` sections; its help is on the same line after a gap, or on the next line,
    indented further (argparse's layout)."""
    lines = page.splitlines()
    missing: list[str] = []
    section = False
    for i, line in enumerate(lines):
        if line and not line.startswith(" "):
            section = line in ("positional arguments:", "options:")
            continue
        indent = len(line) - len(line.lstrip())
        if not section or not line.strip() or indent > 4:
            continue
        if re.search(r"\S {2,}\S", line.strip()):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if following.strip() and len(following) - len(following.lstrip()) > indent + 2:
            continue
        missing.append(line.strip())
    return missing


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["demo"]])
def test_every_argument_and_option_has_help(command: list[str]) -> None:
    r = cli(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert "options:" in r.stdout
    assert _entries_without_help(r.stdout) == [], r.stdout
    if command in (["run"], ["validate"], ["demo"]):
        assert "--port-offset N" in r.stdout
    if command == []:
        assert "{run,validate,demo}" in r.stdout
        assert "{DEBUG,INFO,WARNING,ERROR,CRITICAL}" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["run", "blueprints/basic.yaml", "--bogus"],
        ["validate", "blueprints/basic.yaml", "--bogus"],
        ["demo", "--bogus"],
    ],
)
def test_an_unknown_flag_is_named_and_exits_2(args: list[str]) -> None:
    r = cli(*args)
    assert r.returncode == 2
    assert "error: unrecognized arguments: --bogus" in r.stderr
    assert "Traceback" not in r.stderr


def test_log_level_takes_one_of_the_listed_levels_in_any_case() -> None:
    r = cli("--log-level", "loud", "validate", str(BLUEPRINTS / "basic.yaml"))
    assert r.returncode == 2
    assert "argument --log-level: invalid choice: 'LOUD'" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("--log-level", "debug", "validate", str(BLUEPRINTS / "basic.yaml"))
    assert r.returncode == 0, r.stderr


BAD_TYPE = (
    "system:\n  name: s\n  components:\n"
    "    - {name: a, type: Store}\n"
    "    - {name: b, type: Store}\n"
    "    - {name: c, type: Nope}\n"
)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_blueprint_error_names_the_file_and_the_path(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "x.yaml"
    bad.write_text(BAD_TYPE)
    r = cli(command, str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith(
        f"streammetrics: error: {bad}: system.components[2].type: unknown component type 'Nope'"
    ), r.stderr
    assert r.stderr.count("\n") == 1


def test_unreadable_yaml_names_the_file_once(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("system: [\n")
    r = cli("validate", str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith(f"streammetrics: error: {bad}: not valid YAML (line 2"), r.stderr
    missing = tmp_path / "nope.yaml"
    r = cli("validate", str(missing))
    assert r.stderr == f"streammetrics: error: {missing}: cannot read blueprint: " + (
        "No such file or directory\n"
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_port_offset_out_of_range_says_so(command: str) -> None:
    basic = str(BLUEPRINTS / "basic.yaml")
    r = cli(command, basic, "--port-offset", "60000")
    assert r.returncode == 2
    assert r.stderr == (
        f"streammetrics: error: {basic}: system.components[0].config.port: --port-offset 60000 "
        "moves port 8000 of component 'app_server' to 68000, outside 1-65535\n"
    )


def test_a_port_offset_onto_port_0_is_refused_not_turned_into_a_free_port(
    tmp_path: Path,
) -> None:
    # Port 0 means "any free port": an offset landing on it would silently do that instead.
    bp = tmp_path / "one.yaml"
    bp.write_text(
        "system:\n  name: s\n  components:\n"
        "    - {name: m, type: MetricsEndpoint, config: {port: 9000}}\n"
    )
    r = cli("validate", str(bp), "--port-offset", "-9000")
    assert r.returncode == 2
    assert "moves port 9000 of component 'm' to 0, outside 1-65535" in r.stderr


def test_validate_applies_the_port_offset_as_run_does(tmp_path: Path) -> None:
    basic = str(BLUEPRINTS / "basic.yaml")
    assert cli("validate", basic, "--port-offset", "56535").returncode == 0  # 9000 -> 65535
    r = cli("validate", basic, "--port-offset", "56536")
    assert r.returncode == 2
    assert "moves port 9000 of component 'system_metrics' to 65536" in r.stderr
    env = {**os.environ, "STREAMMETRICS_PORT_OFFSET": "60000"}
    r = cli("validate", basic, env=env)
    assert r.returncode == 2
    assert "$STREAMMETRICS_PORT_OFFSET=60000 moves port 8000 of component 'app_server'" in r.stderr


def test_demo_names_its_bundled_blueprint_for_a_bad_offset() -> None:
    r = cli("demo", "--port-offset", "-8000")
    assert r.returncode == 2
    assert r.stderr.startswith("streammetrics: error: streammetrics:demo.yaml: system.components[")
    assert "--port-offset -8000 moves port 8000 of component 'public_api' to 0" in r.stderr


def test_version_prints_the_installed_distributions_version() -> None:
    from importlib.metadata import version

    import streammetrics

    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"streammetrics {streammetrics.__version__}\n"
    assert streammetrics.__version__ == version("streammetrics")  # one source of the version
    assert "--version" in cli("--help").stdout
