"""Every ```python block of README.md, pasted into a file and run as a script.

A block runs as shown: no rewriting, only what the README itself says about it. An HTML
comment on the line before a block (``<!-- readme-test: ... -->``) says what it needs:

- nothing: it runs to its end and exits 0;
- ``serves [PATH]``: it serves until interrupted; its stdout names its URL (a port of 0
  picks a free one), ``PATH`` (default ``/health``) must answer 200, and Ctrl-C must stop
  it quietly: exit 130, one line on stderr, no traceback;
- ``needs endpoint``: a real ``streammetrics run`` endpoint is started on a free port and
  its URL given as ``$METRICS_URL``; the block must have reported events to it;
- ``needs redis``: a real redis-server on a free port, its URL in ``$REDIS_URL``; the
  block must have written a stream entry.

Blocks added to the README later are picked up without touching this file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.paths import ROOT
from tests.support.process import Spawned
from tests.support.servers import RedisServer, Run
from tests.support.waiting import wait_until

README = ROOT / "README.md"
RUN_TIMEOUT_S = 60
MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
FENCE_OPEN = re.compile(r"^(\s*)```python\s*$")
FENCE_CLOSE = re.compile(r"^\s*```\s*$")
KINDS = ("run", "serves", "needs endpoint", "needs redis")


@dataclass(frozen=True)
class Block:
    line: int
    """1-based line of the opening fence, for the test id and failure messages."""
    code: str
    kind: str
    """One of KINDS."""
    path: str = "/health"
    """For ``serves``: the route that must answer 200."""


def _marker(text: str, where: int) -> tuple[str, str]:
    kind, _, rest = text.partition(" ")
    if kind == "serves":
        path = rest.strip() or "/health"
        if not path.startswith("/"):
            raise AssertionError(f"README.md:{where}: 'serves' takes a path, got {rest!r}")
        return "serves", path
    if text in KINDS:
        return text, "/health"
    raise AssertionError(f"README.md:{where}: unknown readme-test marker {text!r}; know {KINDS}")


def python_blocks(text: str) -> list[Block]:
    """Every ```python block with what its marker says; a marker anywhere but right
    before a python block is an error (it would silently test nothing)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            assert pending is None, f"README.md:{pending[0]}: marker not followed by ```python"
            pending = (i + 1, marker[1])
            i += 1
            continue
        fence = FENCE_OPEN.match(line)
        if fence is None:
            assert pending is None or not line.strip(), (
                f"README.md:{pending[0]}: marker not followed by ```python"
            )
            i += 1
            continue
        start = i + 1  # 1-based line of the fence
        body: list[str] = []
        i += 1
        while i < len(lines) and not FENCE_CLOSE.match(lines[i]):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"README.md:{start}: unclosed ```python block"
        kind, path = ("run", "/health") if pending is None else _marker(pending[1], pending[0])
        blocks.append(Block(start, textwrap.dedent("\n".join(body)) + "\n", kind, path))
        pending = None
        i += 1
    assert pending is None, f"README.md:{pending[0]}: marker not followed by ```python"
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def _env(**extra: str) -> dict[str, str]:
    # Unbuffered, as in a terminal: a block's print() is seen when it happens.
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _script(tmp_path: Path, block: Block) -> Path:
    path = tmp_path / f"readme_line_{block.line}.py"
    path.write_text(block.code, encoding="utf-8")
    return path


def _run_to_end(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,  # where a reader of the README runs its commands
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert r.returncode == 0, f"{script.name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _serve_then_interrupt(script: Path, block: Block) -> None:
    proc = Spawned([sys.executable, str(script)], cwd=ROOT, env=_env())
    try:
        m = proc.wait_for(r"http://[^\s,/]+", RUN_TIMEOUT_S)
        r = httpx.get(m[0] + block.path, timeout=5)
        assert r.status_code == 200, (block.path, r.status_code, r.text[:500])
    finally:
        code, _out, err = proc.stop(signal.SIGINT, 20)
    assert code == 130, f"exit {code} after Ctrl-C: {err}"
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, f"Ctrl-C should print one line, got:\n{err}"


def _reported(url: str) -> dict[str, Any]:
    comps: dict[str, Any] = httpx.get(url + "/metrics/json", timeout=5).json()[
        "detailed_components"
    ]
    return {
        name: c
        for name, c in comps.items()
        if c["type"] != "MetricsEndpoint" and c["items_processed"] + c["errors_encountered"] > 0
    }


def _with_endpoint(script: Path, tmp_path: Path) -> None:
    blueprint = tmp_path / "endpoint.yaml"
    blueprint.write_text(
        "system:\n  name: readme\n  components:\n"
        "    - {name: metrics, type: MetricsEndpoint, config: {port: 0, tick_s: 0.2}}\n"
    )
    server = Run(blueprint)
    try:
        url = server.wait_listening(1)["metrics"]
        assert _reported(url) == {}
        _run_to_end(script, _env(METRICS_URL=url))
        wait_until(lambda: _reported(url), timeout=10, what="the block's events folded")
    finally:
        server.stop()


def _with_redis(script: Path, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    try:
        _run_to_end(script, _env(REDIS_URL=server.url))
        client = redis.Redis.from_url(server.url)
        try:
            streams = list(client.scan_iter(_type="STREAM"))
            assert streams, "the block wrote no stream"
            assert sum(int(client.xlen(s)) for s in streams) > 0
        finally:
            client.close()
    finally:
        server.stop()


def test_the_readme_has_python_blocks_of_each_kind() -> None:
    # The parser itself: if it found nothing, every test below would pass vacuously.
    kinds = {b.kind for b in BLOCKS}
    assert {"serves", "needs endpoint", "needs redis"} <= kinds, BLOCKS


def test_a_marker_must_sit_right_before_a_python_block() -> None:
    with pytest.raises(AssertionError, match="marker not followed"):
        python_blocks("<!-- readme-test: serves -->\n```yaml\na: 1\n```\n")
    with pytest.raises(AssertionError, match="unknown readme-test marker"):
        python_blocks("<!-- readme-test: serve -->\n```python\npass\n```\n")
    (block,) = python_blocks("text\n\n  ```python\n  print(1)\n  ```\n")
    assert (block.line, block.code, block.kind) == (3, "print(1)\n", "run")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs_as_shown(block: Block, tmp_path: Path) -> None:
    script = _script(tmp_path, block)
    if block.kind == "run":
        _run_to_end(script, _env())
    elif block.kind == "serves":
        _serve_then_interrupt(script, block)
    elif block.kind == "needs endpoint":
        _with_endpoint(script, tmp_path)
    else:
        _with_redis(script, tmp_path)
