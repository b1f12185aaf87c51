"""The table of programs the suite drives: a missing program fails naming its Debian package."""

from __future__ import annotations

import pytest

from tests.support.tools import missing_message, need


def test_a_missing_program_fails_naming_its_debian_package() -> None:
    assert "apt-get install prometheus" in missing_message("promtool")
    with pytest.raises(pytest.fail.Exception, match="not-a-real-program"):
        need("not-a-real-program")
