"""The shared validated types: durations as a blueprint writes them (``2m``, ``500ms``, a number of
seconds), and what is refused."""

from __future__ import annotations

import re
import typing

import msgspec
import pytest

from streammetrics.model.types import (
    MAX_NAME,
    DeclaredName,
    DurationError,
    name_problem,
    parse_duration,
)


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


# -- the one name rule -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api", "a b", "café", "名前", "orders-v2:eu.1", "x" * MAX_NAME])
def test_printable_names_keep_the_rule(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("a\x00b", "character 1 is U+0000 (a control character)"),
        ("\x1b[31mred", "character 0 is U+001B (a control character)"),
        ("a\nb", "character 1 is U+000A (a control character)"),
        ("a\tb", "U+0009 (a control character)"),
        ("x\x7f", "U+007F (a control character)"),
        ("x\u200b", "U+200B (ZERO WIDTH SPACE)"),
        ("x\u202e", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("x\u2028", "U+2028 (LINE SEPARATOR)"),
        ("x\u00a0", "U+00A0 (NO-BREAK SPACE)"),
        ("x\ud800", "U+D800 (a surrogate)"),
        ("", "must not be empty"),
        ("x" * (MAX_NAME + 1), f"at most {MAX_NAME} characters; this one has {MAX_NAME + 1}"),
    ],
)
def test_names_that_break_the_rule_say_which_character(name: str, said: str) -> None:
    problem = name_problem(name)
    assert problem is not None and said in problem


@pytest.mark.parametrize("name", ["api", "orders-v2:eu.1", "a_b", "x" * MAX_NAME])
def test_every_declared_name_keeps_the_name_rule(name: str) -> None:
    """DeclaredName is the stricter subset: what a blueprint accepts, an event accepts."""
    assert msgspec.convert(name, DeclaredName) == name
    assert name_problem(name) is None


def test_the_declared_pattern_admits_only_printable_characters() -> None:
    pattern = re.compile(typing.get_args(DeclaredName)[1].pattern)
    every = "".join(map(chr, range(0x250)))
    admitted = [c for c in every if pattern.match(c)]
    assert admitted and all(name_problem(c) is None for c in admitted)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert("a\x1bb", DeclaredName)
