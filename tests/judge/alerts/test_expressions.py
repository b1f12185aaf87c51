"""The rule expression language: what it accepts, what it refuses and why, how absent
figures behave. Nothing here may ever run the text it is given."""

from __future__ import annotations

import operator
from pathlib import Path

import pytest

from streammetrics.judge.alerts.expressions import RuleSyntaxError, compile_expr, simple_comparison

NAMES = frozenset({"error_rate", "items_per_second", "p99", "up", "errors", "processed"})


def run(expr: str, **figures: float | None) -> object:
    fn, _used = compile_expr(expr, NAMES)
    return fn(figures)


@pytest.mark.parametrize(
    ("expr", "figures", "expected"),
    [
        ("error_rate > 0.05", {"error_rate": 0.06}, True),
        ("error_rate > 0.05", {"error_rate": 0.05}, False),
        ("error_rate >= 0.05", {"error_rate": 0.05}, True),
        ("error_rate < 0.05", {"error_rate": 0.01}, True),
        ("error_rate <= 0.05", {"error_rate": 0.06}, False),
        ("up == 0", {"up": 0.0}, True),
        ("up != 0", {"up": 0.0}, False),
        ("0.05 < error_rate", {"error_rate": 0.5}, True),  # number on the left
        ("0.01 < error_rate < 0.1", {"error_rate": 0.05}, True),  # chained, as in Python
        ("0.01 < error_rate < 0.1", {"error_rate": 0.2}, False),
        ("error_rate > 0.05 and p99 > 1", {"error_rate": 1, "p99": 2}, True),
        ("error_rate > 0.05 and p99 > 1", {"error_rate": 1, "p99": 0}, False),
        ("error_rate > 0.5 or p99 > 1", {"error_rate": 0.0, "p99": 2.0}, True),
        ("error_rate > 0.5 or p99 > 1", {"error_rate": 0.0, "p99": 0.5}, False),
        ("up == 1 and p99 > 1 and error_rate < 0.1", {"up": 1, "p99": 2, "error_rate": 0}, True),
        ("up == 1 and p99 > 1 and error_rate < 0.1", {"up": 1, "p99": 2, "error_rate": 1}, False),
        ("up == 0 or p99 > 1 or error_rate > 0.1", {"up": 1, "p99": 0, "error_rate": 1}, True),
        ("not up == 1", {"up": 0.0}, True),
        ("not (up == 1)", {"up": 1.0}, False),
        ("errors / processed > 0.1", {"errors": 2, "processed": 10}, True),
        ("errors / (processed + errors) > 0.1", {"errors": 1, "processed": 10}, False),
        ("processed - errors * 2 >= 6", {"errors": 2, "processed": 10}, True),
        ("-p99 < -1", {"p99": 2.0}, True),
        ("true", {}, True),
        ("false or up == 1", {"up": 1.0}, True),
        ("True and up == 1", {"up": 1.0}, True),  # Python's spelling is fine too
        ("1_000 < processed", {"processed": 1001}, True),
    ],
)
def test_what_the_language_computes(expr: str, figures: dict[str, float], expected: bool) -> None:
    assert bool(run(expr, **figures)) is expected


@pytest.mark.parametrize(
    ("expr", "figures", "expected"),
    [
        # an absent figure (None) makes a comparison false, whichever way it is written
        ("p99 > 1", {"p99": None}, False),
        ("p99 <= 1", {"p99": None}, False),
        ("p99 == 0", {}, False),  # not there at all
        ("not p99 > 1", {"p99": None}, True),  # the comparison is False, so `not` is True
        ("0 < p99 < 1", {"p99": None}, False),
        ("p99 * 2 > 1", {"p99": None}, False),
        ("p99 > 1 or up == 1", {"p99": None, "up": 1.0}, True),
        ("p99 > 1 and up == 1", {"p99": None, "up": 1.0}, False),
        # division by zero is absent too, not an exception
        ("errors / processed > 0.1", {"errors": 1, "processed": 0}, False),
        ("errors / processed <= 0.1", {"errors": 1, "processed": 0}, False),
    ],
)
def test_absent_figures_match_nothing(
    expr: str, figures: dict[str, float | None], expected: bool
) -> None:
    assert bool(run(expr, **figures)) is expected


def test_bare_absent_figure_and_its_negation_stay_absent() -> None:
    assert run("p99", p99=None) is None
    assert run("not p99", p99=None) is None
    assert run("-p99", p99=None) is None
    assert run("p99 + 1", p99=None) is None


def test_used_names_in_order_each_once() -> None:
    _fn, used = compile_expr("p99 > 1 or error_rate > 0.1 and p99 < 9 and up == 1", NAMES)
    assert used == ["p99", "error_rate", "up"]
    _fn, used = compile_expr("true", NAMES)
    assert used == []


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("__import__('os').system('touch {marker}')", "Call is not allowed"),
        ("error_rate.real > 0", "Attribute is not allowed"),
        ("errors[0] > 1", "Subscript is not allowed"),
        ("error_rate > 'x'", "the constant 'x' is not allowed"),
        ("error_rate ** 2 > 1", "operator '**' is not allowed"),
        ("errors >> 2 > 1", "operator '>>' is not allowed"),
        ("errors % 2 == 1", "operator '%' is not allowed"),
        ("errors // 2 == 1", "operator '//' is not allowed"),
        ("errors & 1", "operator '&' is not allowed"),
        ("~errors", "operator '~' is not allowed"),
        ("+errors > 1", "operator 'unary +' is not allowed"),
        ("errors in (1, 2)", "operator 'in' is not allowed"),
        ("errors is None", "operator 'is' is not allowed"),
        ("(lambda: 1)()", "Call is not allowed"),
        ("[e for e in errors]", "ListComp is not allowed"),
        ("(x := 1)", "NamedExpr is not allowed"),
        ("f'{errors}'", "JoinedStr is not allowed"),
        ("up if errors else p99", "IfExp is not allowed"),
        ("None", "the constant None is not allowed"),
    ],
)
def test_refused_nodes_say_what_and_where(expr: str, says: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = expr.replace("{marker}", str(marker))
    with pytest.raises(RuleSyntaxError) as info:
        compile_expr(text, NAMES)
    msg = str(info.value)
    assert says in msg
    assert repr(text) in msg  # the whole expression, to find it in the blueprint
    assert "use figure names, numbers" in msg
    assert not marker.exists()  # nothing was ever run


def test_unknown_figure_names_it_and_lists_the_known_ones() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        compile_expr("error_rat > 0.05", NAMES)
    msg = str(info.value)
    assert "unknown figure 'error_rat'" in msg
    assert "known: error_rate, errors, items_per_second, p99, processed, up" in msg


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("error_rate >", "cannot parse"),
        ("error_rate > 0.05 and", "cannot parse"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("error_rate > 1 " + "or error_rate > 1 " * 40, "longer than 500 characters"),
        ("import os", "cannot parse"),
    ],
)
def test_unparseable_expressions(expr: str, says: str) -> None:
    with pytest.raises(RuleSyntaxError, match=says):
        compile_expr(expr, NAMES)


def test_syntax_errors_give_the_column() -> None:
    with pytest.raises(RuleSyntaxError, match="at column"):
        compile_expr("error_rate > > 1", NAMES)


def test_simple_comparison_is_recognised_only_for_name_op_number() -> None:
    assert simple_comparison("error_rate > 0.05") == ("error_rate", operator.gt, 0.05)
    assert simple_comparison("  up == 0 ") == ("up", operator.eq, 0.0)
    assert simple_comparison("p99 <= 2") == ("p99", operator.le, 2.0)
    for other in (
        "0.05 < error_rate",
        "error_rate > p99",
        "error_rate > 0.05 and up == 1",
        "0 < p99 < 1",
        "true == 1",
        "up == True",
        "-p99 > 1",
    ):
        assert simple_comparison(other) is None, other


@pytest.mark.parametrize(
    "expr",
    ["error_rate > 0.05", "up == 0", "p99 >= 1.5", "processed != 3", "errors < 2", "p99 <= 0"],
)
@pytest.mark.parametrize("value", [None, 0.0, 0.05, 1.5, 2.0, 3.0, -1.0])
def test_simple_form_agrees_with_the_compiled_evaluator(expr: str, value: float | None) -> None:
    fn, (name,) = compile_expr(expr, NAMES)
    form = simple_comparison(expr)
    assert form is not None
    fname, op, const = form
    assert fname == name
    inline = value is not None and op(value, const)
    assert fn({name: value}) is inline
