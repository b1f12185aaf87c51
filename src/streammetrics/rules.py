"""A small, safe expression language over a snapshot's named figures.

``error_rate > 0.05 and items_per_second > 1`` is parsed by Python's own parser
(``ast.parse(mode="eval")``) and then only a whitelist of node kinds is compiled into
closures: comparisons, ``and`` / ``or`` / ``not``, ``+ - * /``, numbers and figure names.
Nothing is ever ``eval``-ed, and an unknown name is an error when the blueprint is
validated, not when the rule first runs. A figure that is unknown *now* (``p99`` of a
component that timed nothing) makes its comparison false, as an absent series does in
PromQL.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ("Compiled", "Figures", "RuleSyntaxError", "compile_expr", "parse_duration")

Figures = Mapping[str, float | None]
Value = float | bool | None
Compiled = Callable[[Figures], Value]


class RuleSyntaxError(ValueError):
    """An expression or duration that cannot be compiled; the message says what and where."""


_CMP: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_BIN: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def compile_expr(expr: str, names: Collection[str]) -> tuple[Compiled, list[str]]:
    """Compile ``expr`` over the figure ``names``; returns the evaluator and the names used."""
    if len(expr) > 500:
        raise RuleSyntaxError(f"expression longer than 500 characters: {expr[:40]!r}…")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleSyntaxError(f"cannot parse {expr!r}: {exc.msg} at column {exc.offset}") from None
    used: list[str] = []
    fn = _compile(tree.body, expr, frozenset(names), used)
    return fn, used


def _compile(node: ast.AST, expr: str, names: frozenset[str], used: list[str]) -> Compiled:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        value = float(node.value)
        return lambda f: value
    if isinstance(node, ast.Name):
        name = node.id
        if name in ("true", "false"):
            b = name == "true"
            return lambda f: b
        if name not in names:
            known = ", ".join(sorted(names))
            raise RuleSyntaxError(f"unknown figure {name!r} in {expr!r}; known: {known}")
        used.append(name)
        return lambda f: f.get(name)
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand, expr, names, used)
        if isinstance(node.op, ast.Not):
            return lambda f: _not(inner(f))
        if isinstance(node.op, ast.USub):
            return lambda f: _neg(inner(f))
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, expr, names, used) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda f: all(bool(p(f)) for p in parts)
        return lambda f: any(bool(p(f)) for p in parts)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        op = _BIN[type(node.op)]
        left = _compile(node.left, expr, names, used)
        right = _compile(node.right, expr, names, used)
        return lambda f: _arith(op, left(f), right(f))
    if isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
        terms = [_compile(node.left, expr, names, used)]
        terms += [_compile(c, expr, names, used) for c in node.comparators]
        ops = [_CMP[type(o)] for o in node.ops]
        return lambda f: _compare(terms, ops, f)
    raise RuleSyntaxError(
        f"{type(node).__name__} is not allowed in {expr!r}: use figure names, numbers, "
        "comparisons, and/or/not and + - * /"
    )


def _not(v: Value) -> Value:
    return None if v is None else not v


def _neg(v: Value) -> Value:
    return None if v is None else -float(v)


def _arith(op: Callable[[float, float], float], a: Value, b: Value) -> Value:
    if a is None or b is None:
        return None
    try:
        return op(float(a), float(b))
    except ZeroDivisionError:
        return None


def _compare(terms: list[Compiled], ops: list[Callable[[Any, Any], bool]], f: Figures) -> bool:
    values = [t(f) for t in terms]
    if any(v is None for v in values):
        return False
    return all(op(values[i], values[i + 1]) for i, op in enumerate(ops))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float) -> float:
    """``"2m"`` → 120.0; ``"500ms"``, ``"30s"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise RuleSyntaxError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    m = _DURATION.match(str(value))
    if m is None:
        raise RuleSyntaxError(f"not a duration: {value!r} (use e.g. 30s, 2m, 1h, 500ms)")
    return float(m.group(1)) * _UNIT[m.group(2)]
