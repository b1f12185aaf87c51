"""A subprocess the tests talk to by its output, with deadlines that always hold.

``readline()`` on a pipe blocks until the child prints a line or exits: a child that
hangs silently would hang the test with it. Here a thread per pipe moves lines into a
queue, and every wait reads that queue with the time that is left, so a wait ends at its
deadline whether or not the child says anything.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_EOF = None


def cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m streammetrics.cli ARGS`` run to its end, its output captured as text;
    ``env``, when given, is the child's whole environment."""
    return subprocess.run(
        [sys.executable, "-m", "streammetrics.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class Spawned:
    """``argv`` running with stdout and stderr read in the background (text, by line)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        #: stdout lines the waits have consumed, in order
        self.lines: list[str] = []
        self._out: queue.Queue[str | None] = queue.Queue()
        self._err: list[str | None] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._pump, args=(self.proc.stdout, self._out.put), daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(self.proc.stderr, self._err.append), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(pipe: IO[str], put: Callable[[str | None], object]) -> None:
        with pipe:  # closed here at EOF: nothing else reads it
            for line in pipe:
                put(line)
        put(_EOF)

    @property
    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        return "".join(e for e in self._err if e is not None)

    def next_line(self, deadline: float) -> str | None:
        """The next stdout line, or None once stdout is closed; fails past ``deadline``."""
        left = deadline - time.monotonic()
        try:
            line = self._out.get(timeout=max(0.0, left))
        except queue.Empty:
            raise AssertionError(
                f"nothing printed in time (exit code {self.proc.poll()}): "
                f"{self.lines} {self.stderr}"
            ) from None
        if line is _EOF:
            self._out.put(_EOF)  # stays closed for later reads
            return None
        self.lines.append(line)
        return line

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Read stdout until a line matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline)
            if line is None:
                self.proc.wait(5)
                raise AssertionError(
                    f"exited early ({self.proc.returncode}) before {pattern!r}: "
                    f"{self.lines} {self.stderr}"
                )
            m = re.search(pattern, line)
            if m is not None:
                return m

    def wait_listening(self, count: int = 1, timeout: float = 20) -> dict[str, str]:
        """Component name -> URL, once ``count`` servers printed ``NAME ... listening on URL``."""
        deadline = time.monotonic() + timeout
        urls: dict[str, str] = {}
        while len(urls) < count:
            m = self.wait_for(
                r"^\s*(\S+) .*listening on (\S+)", max(0.0, deadline - time.monotonic())
            )
            urls[m[1]] = m[2]
        return urls

    def rest(self) -> str:
        """The stdout lines no wait has consumed (the child must have closed stdout)."""
        out: list[str] = []
        while (line := self._out.get()) is not _EOF:
            out.append(line)
        self._out.put(_EOF)
        return "".join(out)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str, str]:
        """Signal the child and wait for it: (exit code, unread stdout, all stderr).

        Past ``timeout`` the child is killed (its exit code then says so).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.proc.returncode, self.collect(), self.stderr

    def collect(self) -> str:
        """Once the child has exited: join the readers and return the unread stdout."""
        for reader in self._readers:
            reader.join(10)
        return self.rest()

    def kill(self) -> None:
        """Kill the child if it still runs, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(10)
