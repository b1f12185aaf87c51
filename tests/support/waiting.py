"""Waiting for what other tasks and processes do, always bounded.

No event announces a figure (it belongs to another task, or another process), so the
tests poll; every poll fails the test at its deadline and says what it saw last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx


async def until(cond: Callable[[], object], within: float = 10.0) -> None:
    """Wait for ``cond()`` while the system runs; fail the test after ``within`` seconds."""
    with anyio.fail_after(within):
        while not cond():  # noqa: ASYNC110 - figures of other tasks, no event announces them
            await anyio.sleep(0.005)


def wait_until(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    """Poll ``check()`` until it returns something truthy (returned); fail past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.05)


async def poll_response(
    client: httpx.AsyncClient,
    path: str,
    cond: Callable[[httpx.Response], object],
    within: float = 5.0,
) -> httpx.Response:
    """GET ``path`` until ``cond`` holds of the response (returned); fail with the last one."""
    r: httpx.Response | None = None
    with anyio.move_on_after(within):
        while True:
            r = await client.get(path)
            if cond(r):
                return r
            await anyio.sleep(0.01)
    last = r and (r.status_code, r.text)
    raise AssertionError(f"{path} never got there within {within}s; last: {last}")


async def poll(
    client: httpx.AsyncClient,
    path: str,
    cond: Callable[[Any], object],
    within: float = 5.0,
) -> Any:
    """GET ``path`` until ``cond`` holds of the JSON body (returned); fail with the last one."""
    return (await poll_response(client, path, lambda r: cond(r.json()), within)).json()


async def poll_counted(url: str, component: str, within: float = 5.0) -> Any:
    """The JSON body at ``url`` once ``component`` shows a count, with a client of its own."""

    def counted(body: Any) -> object:
        return body.get("detailed_components", {}).get(component, {}).get("items_processed")

    async with httpx.AsyncClient(timeout=5.0) as client:
        return await poll(client, url, counted, within)
