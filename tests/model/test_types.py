"""The shared validated types: durations as a blueprint writes them (``2m``, ``500ms``, a number of
seconds), and what is refused."""

from __future__ import annotations

import pytest

from streammetrics.model.types import DurationError, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m", 120.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        (" 10 s ", 10.0),
        ("45", 45.0),
        (45, 45.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["2x", "m", "", "-5s", "1m30s", "two minutes", -1, -0.5, True])
def test_bad_durations(bad: str | float) -> None:
    with pytest.raises(DurationError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (" 1.5 s ", 1.5), (3, 3.0)],
)
def test_durations_of_rate_limit_periods(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds
