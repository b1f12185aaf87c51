"""The suite's own child-process reader: a readiness wait ends at its deadline even when
the child prints nothing, and a child that exits early says so with its stderr."""

from __future__ import annotations

import sys
import time

import pytest

from tests.support.process import Spawned


def test_a_wait_on_a_silent_child_ends_at_its_deadline() -> None:
    child = Spawned([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        t0 = time.monotonic()
        with pytest.raises(AssertionError, match="nothing printed in time"):
            child.wait_listening(1, timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        child.kill()
    assert child.proc.returncode is not None


def test_a_child_that_exits_before_the_line_says_so_with_its_stderr() -> None:
    child = Spawned([sys.executable, "-c", "import sys; print('hello'); sys.exit('boom')"])
    with pytest.raises(AssertionError, match=r"exited early \(1\).*boom"):
        child.wait_for("listening on", timeout=10)
    assert child.lines == ["hello\n"]
