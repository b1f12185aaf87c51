"""Real servers for the transport tests: redis-server, prometheus, ``streammetrics run``.

Each is started on a free loopback port and stopped (and waited for) by whoever started
it. A binary that is missing or a server that does not come up FAILS the test that
needs it, with the reason (``tools.need`` names the package; ``scripts/test`` installs
them), so a skip would only hide a broken machine.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.process import Spawned
from tests.support.tools import need


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_offset(ports: list[int]) -> int:
    """An offset that puts every one of ``ports`` on a free loopback port (so a blueprint
    with fixed ports runs unchanged under ``--port-offset``)."""
    for _ in range(200):
        offset = free_port() - min(ports)
        if all(0 < p + offset < 65536 for p in ports) and all(_is_free(p + offset) for p in ports):
            return offset
    raise RuntimeError(f"no free loopback ports for {ports}")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _output(proc: subprocess.Popen[Any]) -> str:
    with contextlib.suppress(Exception):
        out, err = proc.communicate(timeout=2)
        return f"{out or ''}{err or ''}"[-3000:]
    return ""


class RedisServer:
    """``redis-server`` on 127.0.0.1:port with persistence off."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        binary = need("redis-server")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server did not start: {_output(self.proc)}", pytrace=False)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                _stop(self.proc)
                pytest.fail(f"redis-server not answering on port {self.port}", pytrace=False)
            time.sleep(0.02)

    def stop(self) -> None:
        _stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp)
    try:
        yield server
    finally:
        server.stop()


class Prometheus:
    """A real ``prometheus`` server scraping ``targets`` every second."""

    def __init__(self, tmp: Path, targets: list[str], rules: Path | None = None) -> None:
        binary = need("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        doc: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "streammetrics",
                    "scrape_interval": "1s",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        if rules is not None:
            doc["rule_files"] = [str(rules)]
        config.write_text(yaml.safe_dump(doc))
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus did not start: {_output(self.proc)}", pytrace=False)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus not ready on port {self.port}", pytrace=False)
            time.sleep(0.1)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query; fails the test on a PromQL error."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, check: Any = bool, timeout: float = 30) -> list[dict[str, Any]]:
        """Query until ``check(result)`` holds; fails with the last result past the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if check(result):
                return result
            assert time.monotonic() < deadline, f"{expr}: still {result}"
            time.sleep(0.25)

    def stop(self) -> None:
        _stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Run(Spawned):
    """A ``streammetrics run BLUEPRINT`` subprocess; ``url`` of its metrics endpoint."""

    def __init__(self, blueprint: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(
            [sys.executable, "-m", "streammetrics.cli", "run", str(blueprint), *args], env=env
        )
        self.urls: dict[str, str] = {}

    def wait_listening(self, count: int = 1, timeout: float = 30) -> dict[str, str]:
        """Component name -> URL, once ``count`` components said where they listen."""
        self.urls.update(super().wait_listening(count - len(self.urls), timeout))
        return self.urls

    def json(self, path: str) -> Any:
        url = next(iter(self.urls.values()))
        return httpx.get(url + path, timeout=5).json()


def wait_until(check: Any, timeout: float = 20, what: str = "") -> Any:
    """Poll ``check()`` until it returns something truthy; fail past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.05)
