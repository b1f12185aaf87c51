"""Real servers: redis-server, prometheus, alertmanager, and ``streammetrics`` commands
(``run``, ``demo``).

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
from collections.abc import Callable, Iterator
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


class _Daemon:
    """A server program on a loopback port, up once ``ready()`` says so; its output (one pipe)
    is kept for the failure message of a start that did not work."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        ready: Callable[[], bool],
        *,
        timeout: float,
        interval: float,
    ) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{name} did not start: {_output(self.proc)}", pytrace=False)
            if ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{name} not ready on port {port}", pytrace=False)
            time.sleep(interval)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it with ``sig`` (SIGKILL: a crash) and wait for it."""
        _stop(self.proc, sig)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _answers_ping(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=0.5) as s,
    ):
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")
    return False


class RedisServer(_Daemon):
    """``redis-server`` on 127.0.0.1:port with persistence off, or with ``aof`` an
    append-only file in ``tmp`` fsynced before every reply (``appendfsync always``): a
    server killed with SIGKILL and started again on the same ``tmp`` has every write it
    acknowledged."""

    def __init__(self, tmp: Path, port: int | None = None, *, aof: bool = False) -> None:
        binary = need("redis-server")
        port = port or free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always"] if aof else []
        argv += [] if aof else ["--appendonly", "no"]
        argv += ["--dir", str(tmp), "--daemonize", "no"]
        super().__init__(
            "redis-server", argv, port, lambda: _answers_ping(port), timeout=10, interval=0.02
        )


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp)
    try:
        yield server
    finally:
        server.stop()


class Prometheus(_Daemon):
    """A real ``prometheus`` server scraping ``targets`` every second."""

    def __init__(self, tmp: Path, targets: list[str], rules: Path | None = None) -> None:
        binary = need("prometheus")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
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
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        super().__init__("prometheus", argv, port, self._ready, timeout=30, interval=0.1)

    def _ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        return False

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


class Alertmanager(_Daemon):
    """A real ``prometheus-alertmanager`` on a loopback port, clustering off, routing every
    alert (one group each) to the webhook ``webhook_url`` within about a second, resolved
    ones too."""

    def __init__(self, tmp: Path, webhook_url: str, port: int | None = None) -> None:
        binary = need("prometheus-alertmanager")
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = tmp / "alertmanager.yml"
        doc: dict[str, Any] = {
            "route": {
                "receiver": "test",
                "group_by": ["..."],
                "group_wait": "100ms",
                "group_interval": "500ms",
                "repeat_interval": "1h",
            },
            "receivers": [
                {"name": "test", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
            ],
        }
        config.write_text(yaml.safe_dump(doc))
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # empty: no cluster port, no gossip
            "--log.level=warn",
        ]
        super().__init__("alertmanager", argv, port, self._ready, timeout=30, interval=0.05)

    def _ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        return False

    def alerts(self) -> list[dict[str, Any]]:
        """What ``GET /api/v2/alerts`` lists (active alerts)."""
        r = httpx.get(f"{self.url}/api/v2/alerts", timeout=5)
        assert r.status_code == 200, r.text
        alerts: list[dict[str, Any]] = r.json()
        return alerts


class Cli(Spawned):
    """``python -m streammetrics.cli ARGS`` running (``run``, ``demo``), read by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "streammetrics.cli", *args], env=env)
        self.urls: dict[str, str] = {}

    def wait_listening(self, count: int = 1, timeout: float = 30) -> dict[str, str]:
        """Component name -> URL, once ``count`` components said where they listen."""
        self.urls.update(super().wait_listening(count - len(self.urls), timeout))
        return self.urls

    def json(self, path: str) -> Any:
        """The JSON body of ``path`` on the first component that said where it listens."""
        url = next(iter(self.urls.values()))
        return httpx.get(url + path, timeout=5).json()

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """Wait for the exit: (code, all of stdout, stderr)."""
        self.proc.wait(timeout)
        rest = self.collect()
        return self.proc.returncode, "".join(self.lines) + rest, self.stderr


class Run(Cli):
    """A ``streammetrics run BLUEPRINT ARGS`` subprocess."""

    def __init__(
        self, blueprint: Path | str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        super().__init__("run", str(blueprint), *args, env=env)
