"""The figures of the endpoint's own process: resident memory and CPU, read with psutil.

Reading ``/proc`` is a blocking system call, so callers run ``sample()`` in a worker
thread (``anyio.to_thread.run_sync``), never on the event loop.
"""

from __future__ import annotations

import threading
from typing import Protocol

import psutil

from .snapshot import ProcessStats

__all__ = ("ProcessSampler", "Sampler")

_MIB = 2**20


class Sampler(Protocol):
    """Anything that reads process figures; tests pass one that fails on purpose."""

    def sample(self) -> ProcessStats: ...


class ProcessSampler:
    """Samples the current process."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._lock = threading.Lock()
        # psutil's first cpu_percent(interval=None) has nothing to compare with and says
        # 0.0; priming it here makes the first real sample measure from construction on.
        self._process.cpu_percent(interval=None)

    def sample(self) -> ProcessStats:
        """RSS in MiB and CPU percent since the previous sample (may exceed 100 on SMP)."""
        # cpu_percent keeps the previous reading inside the Process object: two threads
        # sampling at once would each see half an interval.
        with self._lock, self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_percent(interval=None)
        return ProcessStats(memory_usage_mb=rss / _MIB, cpu_usage_percent=cpu)
