"""The command line, as a user runs it: real subprocesses, real ports, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from _servers import free_offset

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINTS = ROOT / "blueprints"


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streammetrics.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Running:
    """A ``streammetrics run`` subprocess, stopped with SIGTERM at the end."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streammetrics.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []

    def wait_listening(self, count: int, timeout: float = 20) -> list[str]:
        """Read stdout until ``count`` 'listening on' lines arrived."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        urls: list[str] = []
        while len(urls) < count:
            assert time.monotonic() < deadline, f"not listening in time: {self.lines}"
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"exited early: {self.lines} {err}")
            self.lines.append(line)
            if "listening on" in line:
                urls.append(line.rsplit(" ", 1)[1].strip())
        return urls

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out


def test_validate_ok_for_every_shipped_blueprint() -> None:
    for path in sorted(BLUEPRINTS.glob("*.yaml")):
        r = _cli("validate", str(path))
        assert r.returncode == 0, (path, r.stderr)
        assert r.stdout.startswith("ok: system ")


def test_validate_bad_blueprint_exits_2_naming_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "system:\n  name: s\n  components:\n"
        "    - {name: a, type: Store}\n"
        "    - {name: m, type: MetricsEndpoint, config: {port: 'abc'}}\n"
    )
    r = _cli("validate", str(bad))
    assert r.returncode == 2
    assert "system.components[1].config.port" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_missing_file_exits_2(tmp_path: Path) -> None:
    r = _cli("validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "cannot read blueprint" in r.stderr


def test_run_basic_blueprint_serves_every_route_and_stops_on_sigterm() -> None:
    offset = free_offset([8000, 9000])
    run = Running("run", str(BLUEPRINTS / "basic.yaml"), "--port-offset", str(offset))
    try:
        urls = run.wait_listening(2)
        metrics = f"http://127.0.0.1:{9000 + offset}"
        api = f"http://127.0.0.1:{8000 + offset}"
        assert metrics in urls and api in urls
        with httpx.Client(timeout=5) as c:
            for i in range(5):
                assert c.post(f"{api}/items", json={"n": i}).status_code == 202
            deadline = time.monotonic() + 10
            while True:
                comps = c.get(f"{metrics}/components").json()["components"]
                if comps["data_store"]["items_processed"] == 5:
                    break
                assert time.monotonic() < deadline, comps
                time.sleep(0.2)
            assert comps["app_server"]["items_processed"] == 5
            assert set(comps) == {"app_server", "data_store", "system_metrics"}
            health = c.get(f"{metrics}/health")
            assert health.status_code == 200
            assert health.json()["components"]["total"] == 3
            text = c.get(f"{metrics}/metrics").text
            assert 'component_items_processed_total{component="data_store"} 5.0' in text
    finally:
        code, out = run.stop()
    assert code == 0
    assert "SIGTERM: stopping" in out


def test_multi_environment_blueprint_serves_each_port() -> None:
    offset = free_offset([9000, 9001, 9002])
    run = Running("run", str(BLUEPRINTS / "multi_environment.yaml"), "--port-offset", str(offset))
    try:
        urls = run.wait_listening(3)
        assert len(set(urls)) == 3
        with httpx.Client(timeout=5) as c:
            for url in urls:
                body = c.get(f"{url}/").json()
                assert body["service"] == "System Metrics API"
                assert c.get(f"{url}/health").json()["components"]["total"] == 4
    finally:
        code, _ = run.stop()
    assert code == 0


def test_port_in_use_exits_2_naming_component_host_and_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _cli("run", str(BLUEPRINTS / "basic.yaml"), "--port-offset", str(port - 9000))
    assert r.returncode == 2
    assert "system_metrics" in r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_shows_moving_numbers() -> None:
    offset = free_offset([8000, 9000])
    run = Running("demo", "--port-offset", str(offset))
    try:
        run.wait_listening(2)
        url = f"http://127.0.0.1:{9000 + offset}"
        with httpx.Client(timeout=5) as c:
            time.sleep(1.5)
            first = c.get(f"{url}/metrics/json").json()
            time.sleep(1.5)
            second = c.get(f"{url}/metrics/json").json()
        a = first["detailed_components"]["enrich"]["items_processed"]
        b = second["detailed_components"]["enrich"]["items_processed"]
        assert b > a > 0
        assert second["performance"]["items_per_second"] > 0
        assert second["detailed_components"]["enrich"]["errors_encountered"] > 0
        assert second["streaming"]["total_messages"] > first["streaming"]["total_messages"]
    finally:
        code, _ = run.stop()
    assert code == 0


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_run_stops_cleanly_on_sigint(sig: signal.Signals) -> None:
    offset = free_offset([8000, 9000])
    run = Running("run", str(BLUEPRINTS / "basic.yaml"), "--port-offset", str(offset))
    run.wait_listening(2)
    run.proc.send_signal(sig)
    out, _ = run.proc.communicate(timeout=15)
    assert run.proc.returncode == 0
    assert "stopped" in out
