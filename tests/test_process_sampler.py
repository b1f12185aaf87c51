"""The process sampler reads this process's own memory and CPU."""

from __future__ import annotations

from streammetrics.process_sampler import ProcessSampler


def test_process_sampler_reads_this_process() -> None:
    stats = ProcessSampler().sample()
    assert stats.memory_usage_mb is not None and stats.memory_usage_mb > 1.0
    assert stats.cpu_usage_percent is not None and stats.cpu_usage_percent >= 0.0
