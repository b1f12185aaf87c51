"""A webhook receiver on a loopback port: what Alertmanager's webhook notifier posts,
kept in order for the test to read."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio

#: A notification larger than this is a broken test, not something to keep.
_MAX_BODY = 1 << 20


class Webhook:
    """The notifications received so far (Alertmanager's webhook JSON: ``status``,
    ``alerts`` with their ``status``, ``labels``, ``annotations``, times)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), _MAX_BODY)
                body = json.loads(self.rfile.read(length))
                with hook._lock:
                    hook.notifications.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every alert of every notification so far (of ``status`` when given)."""
        with self._lock:
            got = [a for n in self.notifications for a in n["alerts"]]
        return [a for a in got if status is None or a["status"] == status]

    async def wait_for(
        self, check: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], within: float = 20
    ) -> list[dict[str, Any]]:
        """Poll ``check(self.alerts())`` while the system runs, until it returns a
        non-empty list; fail with what arrived past the deadline."""
        with anyio.move_on_after(within):
            while not (found := check(self.alerts())):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return found
        raise AssertionError(f"the webhook never got it within {within}s; got {self.alerts()}")


@contextlib.contextmanager
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook._server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield hook
    finally:
        hook._server.shutdown()
        hook._server.server_close()
        thread.join(5)
