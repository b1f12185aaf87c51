"""A small, safe expression language over a snapshot's named figures.

``error_rate > 0.05 and items_per_second > 1`` is parsed by Python's own parser
(``ast.parse(mode="eval")``) and then only a whitelist of node kinds is compiled into
closures: comparisons (``< <= > >= == !=``, chained as in Python), ``and`` / ``or`` /
``not``, ``+ - * /``, unary minus, parentheses, numbers, ``true`` / ``false`` and figure
names. Everything else (calls, attributes, subscripts, strings, ``**``…) is refused
with the operator and column. Nothing is ever ``eval``-ed, and an unknown name is an
error when the blueprint is validated, not when the rule first runs.

A figure that is unknown *now* (``p99`` of a component that timed nothing) is None:
arithmetic with it is None, ``not`` of it is None, and a comparison with it is false,
as an absent series matches nothing in PromQL. Division by zero is None too, so
``errors / processed > 0.1`` is simply false while nothing was processed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = (
    "Compiled",
    "NamedFigures",
    "RuleSyntaxError",
    "compile_expr",
    "simple_comparison",
)

NamedFigures = Mapping[str, float | None]
Value = float | bool | None
Compiled = Callable[[NamedFigures], Value]


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


_OP_TEXT: dict[type[ast.AST], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Pow: "**",
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.UAdd: "unary +",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def compile_expr(expr: str, names: Collection[str]) -> tuple[Compiled, list[str]]:
    """Compile ``expr`` over the figure ``names``; returns the evaluator and the names used
    (in order of appearance, each once)."""
    if len(expr) > 500:
        raise RuleSyntaxError(f"expression longer than 500 characters: {expr[:40]!r}…")
    if not expr.strip():
        raise RuleSyntaxError("empty expression; write a condition such as 'error_rate > 0.05'")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleSyntaxError(f"cannot parse {expr!r}: {exc.msg} at column {exc.offset}") from None
    used: list[str] = []
    fn = _compile(tree.body, expr, frozenset(names), used)
    return fn, list(dict.fromkeys(used))


def simple_comparison(expr: str) -> tuple[str, Callable[[Any, Any], bool], float] | None:
    """``(figure, operator, number)`` when ``expr`` is exactly ``figure <op> number``
    (most rules are), else None: a caller running one rule over thousands of instances
    can then test it inline, without a call per instance. Call after ``compile_expr``
    accepted the expression."""
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return None
    left, right, op = node.left, node.comparators[0], type(node.ops[0])
    if not (isinstance(left, ast.Name) and _is_number(right) and op in _CMP):
        return None
    if left.id in ("true", "false"):
        return None
    return left.id, _CMP[op], float(right.value)  # type: ignore[attr-defined]


def _refuse(node: ast.AST, expr: str) -> RuleSyntaxError:
    op = getattr(node, "op", None)
    ops = getattr(node, "ops", None)
    bad = next((o for o in ops if type(o) not in _CMP), None) if ops else op
    what = _OP_TEXT.get(type(bad), type(bad).__name__) if bad is not None else None
    if what is not None:
        desc = f"operator {what!r}"
    elif isinstance(node, ast.Constant):
        desc = f"the constant {node.value!r}"
    else:
        desc = type(node).__name__
    col = getattr(node, "col_offset", None)
    at = f" at column {col + 1}" if col is not None else ""
    return RuleSyntaxError(
        f"{desc} is not allowed in {expr!r}{at}: use figure names, numbers, "
        "comparisons (< <= > >= == !=), and/or/not and + - * /"
    )


def _compile(node: ast.AST, expr: str, names: frozenset[str], used: list[str]) -> Compiled:
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        truth = node.value
        return lambda f: truth
    if _is_number(node):
        value = float(node.value)  # type: ignore[attr-defined]
        return lambda f: value
    if isinstance(node, ast.Name):
        name = node.id
        if name in ("true", "false"):
            truth = name == "true"
            return lambda f: truth
        if name not in names:
            known = ", ".join(sorted(names))
            raise RuleSyntaxError(f"unknown figure {name!r} in {expr!r}; known: {known}")
        used.append(name)
        return lambda f: f.get(name)
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand, expr, names, used) if type(node.op) in _UNARY else None
        if isinstance(node.op, ast.Not) and inner is not None:
            return lambda f: _not(inner(f))
        if isinstance(node.op, ast.USub) and inner is not None:
            return lambda f: _neg(inner(f))
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, expr, names, used) for v in node.values]
        # ``a and b and c`` as ``a and (b and c)``: short-circuits the same, no generator.
        fn = parts[-1]
        for part in reversed(parts[:-1]):
            fn = _and(part, fn) if isinstance(node.op, ast.And) else _or(part, fn)
        return fn
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        op = _BIN[type(node.op)]
        left = _compile(node.left, expr, names, used)
        right = _compile(node.right, expr, names, used)
        return lambda f: _arith(op, left(f), right(f))
    if isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
        return _compile_compare(node, expr, names, used)
    raise _refuse(node, expr)


def _compile_compare(
    node: ast.Compare, expr: str, names: frozenset[str], used: list[str]
) -> Compiled:
    terms = [_compile(node.left, expr, names, used)]
    terms += [_compile(c, expr, names, used) for c in node.comparators]
    ops = [_CMP[type(o)] for o in node.ops]
    if len(ops) == 1:
        # The common shape, ``figure > 0.05``, gets a closure without the general
        # machinery: rules run once per instance per tick, for thousands of instances.
        cmp = ops[0]
        left, right = node.left, node.comparators[0]
        if isinstance(left, ast.Name) and left.id in names and _is_number(right):
            name, const = left.id, float(right.value)  # type: ignore[attr-defined]

            def name_vs_const(f: NamedFigures) -> bool:
                v = f.get(name)
                return v is not None and cmp(v, const)

            return name_vs_const
        a, b = terms

        def pair(f: NamedFigures) -> bool:
            x = a(f)
            if x is None:
                return False
            y = b(f)
            return y is not None and cmp(x, y)

        return pair
    return lambda f: _compare(terms, ops, f)


def _is_number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    )


_UNARY = (ast.Not, ast.USub)


def _and(p1: Compiled, p2: Compiled) -> Compiled:
    return lambda f: bool(p1(f)) and bool(p2(f))


def _or(p1: Compiled, p2: Compiled) -> Compiled:
    return lambda f: bool(p1(f)) or bool(p2(f))


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


def _compare(terms: list[Compiled], ops: list[Callable[[Any, Any], bool]], f: NamedFigures) -> bool:
    values = [t(f) for t in terms]
    if any(v is None for v in values):
        return False
    return all(op(values[i], values[i + 1]) for i, op in enumerate(ops))
