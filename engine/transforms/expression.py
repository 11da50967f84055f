"""Safe arithmetic expressions over fields, e.g. `price * quantity * (1 - discount)`.

The text is parsed with Python's `ast` and only a whitelist of node types is accepted, then compiled to
a Polars expression. Nothing is ever evaluated by Python, so a spec cannot run code.

Accepted: numbers; field names (`price`), dotted paths (`address.floor`) and backquoted names for any
other column name (`` `unit price` ``); `+ - * / // % **`; unary `-`/`+`; parentheses; the functions
abs, round(x[, digits]), min(a, b, ...), max(a, b, ...), sqrt, log(x[, base]), exp, floor, ceil.
Results that are not finite numbers (a division by zero, the log of 0, the square root of a negative
number) become null. With decimals, `a // b` is floor(a / b) of the rounded quotient and `a % b` is
`a - b * (a // b)`, so `1.0 % 0.1` is 0 (Python's own `%` would give 0.0999...); whole numbers behave as
in Python.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from engine.errors import TransformError
from engine.limits import MAX_EXPRESSION_CHARS, MAX_EXPRESSION_DEPTH, MAX_ROUND_DIGITS
from engine.transforms.common import field, is_numeric

_FUNCTIONS: dict[str, tuple[int, int | None]] = {  # name -> (min args, max args)
    "abs": (1, 1),
    "round": (1, 2),
    "min": (2, None),
    "max": (2, None),
    "sqrt": (1, 1),
    "log": (1, 2),
    "exp": (1, 1),
    "floor": (1, 1),
    "ceil": (1, 1),
}
_OPERATORS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
ALLOWED = "numbers, field names, + - * / // % **, parentheses and " + ", ".join(_FUNCTIONS)
_BACKQUOTED = re.compile(r"`([^`]+)`")


class ExpressionError(ValueError):
    """An expression that cannot be parsed or uses something not on the whitelist."""

    def __init__(self, message: str, position: int):
        self.position = position  # 1-based character position in the expression text
        super().__init__(f"{message} at character {position}")


@dataclass(frozen=True)
class ParsedExpression:
    text: str
    tree: ast.expr
    quoted: dict[str, str]  # placeholder identifier -> backquoted column name

    def field_paths(self) -> list[str]:
        found: list[str] = []
        _walk_fields(self.tree, self.quoted, found)
        return list(dict.fromkeys(found))


def parse_expression(text: str) -> ParsedExpression:
    """Check syntax and the whitelist (no schema needed); raises ExpressionError with a position."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression of {len(text):,} characters is too long (at most {MAX_EXPRESSION_CHARS:,})",
            MAX_EXPRESSION_CHARS + 1,
        )
    source, quoted = _replace_backquotes(text)
    indent = len(source) - len(source.lstrip())
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except (RecursionError, MemoryError):  # Python's parser gives up on very deep nesting
        raise ExpressionError(_too_deep(), 1) from None
    except SyntaxError as exc:
        if "too many nested" in str(exc.msg):
            raise ExpressionError(_too_deep(), (exc.offset or 0) + indent) from None
        if not exc.offset:  # Python reports offset 0 when the text ends in the middle of an expression
            raise ExpressionError(
                "invalid expression (it ends too early)", len(source.rstrip()) + 1
            ) from None
        raise ExpressionError(f"invalid expression ({exc.msg})", exc.offset + indent) from None
    _check_depth(tree, source, indent)
    _check(tree, source, indent)
    return ParsedExpression(text, tree, quoted)


def _too_deep() -> str:
    return (
        f"expression nests more than {MAX_EXPRESSION_DEPTH} levels (parentheses, calls, and one per"
        " operator of a chain such as a + b + c); split it into several calculations"
    )


def _check_depth(tree: ast.AST, source: str, indent: int) -> None:
    """Refuse trees deeper than MAX_EXPRESSION_DEPTH before anything walks them recursively."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(_too_deep(), _position(node, source, indent))
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def compile_expression(text: str, schema: pl.Schema, param: str = "parameters.expression") -> pl.Expr:
    """A Polars expression for `text` over `schema`; unknown or non-numeric fields raise TransformError."""
    try:
        parsed = parse_expression(text)
    except ExpressionError as exc:
        raise TransformError(str(exc), param=param) from None
    return null_if_not_finite(_Compiler(schema, parsed.quoted, param).compile(parsed.tree), schema)


def null_if_not_finite(expr: pl.Expr, schema: pl.Schema) -> pl.Expr:
    """Infinite or NaN float results (division by a tiny number, log of 0) become null."""
    result_type = pl.LazyFrame(schema=schema).select(expr.alias("r")).collect_schema()["r"]
    return pl.when(expr.is_finite()).then(expr) if result_type.is_float() else expr


# ---- parsing -------------------------------------------------------------------------------------


def _replace_backquotes(text: str) -> tuple[str, dict[str, str]]:
    """Swap each `name` for a plain identifier of the same length, so error positions stay right."""
    quoted: dict[str, str] = {}

    def swap(match: re.Match) -> str:
        index = len(quoted)
        width = len(match.group(0))
        placeholder = f"_q{index}_".ljust(width, "_")
        quoted[placeholder] = match.group(1)
        return placeholder

    return _BACKQUOTED.sub(swap, text), quoted


def _position(node: ast.AST, source: str, indent: int) -> int:
    line = source.strip().splitlines()[node.lineno - 1] if hasattr(node, "lineno") else ""
    chars = len(line.encode()[: getattr(node, "col_offset", 0)].decode(errors="ignore"))
    before = sum(len(row) + 1 for row in source.strip().splitlines()[: getattr(node, "lineno", 1) - 1])
    return indent + before + chars + 1


def _check(node: ast.AST, source: str, indent: int) -> None:
    def fail(message: str) -> None:
        raise ExpressionError(f"{message} (allowed: {ALLOWED})", _position(node, source, indent))

    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            fail(f"{node.value!r} is not a number")
    elif isinstance(node, ast.Name):
        pass
    elif isinstance(node, ast.Attribute):
        if _dotted(node) is None:
            fail("only field paths like `address.city` may use dots")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _OPERATORS:
            fail(f"operator '{type(node.op).__name__}' is not allowed")
        _check(node.left, source, indent)
        _check(node.right, source, indent)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            fail(f"operator '{type(node.op).__name__}' is not allowed")
        _check(node.operand, source, indent)
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            fail(f"unknown function {ast.unparse(node.func)!r}")
        low, high = _FUNCTIONS[name]
        if node.keywords or len(node.args) < low or (high is not None and len(node.args) > high):
            expected = f"{low}" if low == high else f"{low} to {high}" if high else f"{low} or more"
            fail(f"{name}() takes {expected} positional arguments")
        if name == "round" and len(node.args) == 2:
            digits = node.args[1]
            if not (isinstance(digits, ast.Constant) and type(digits.value) is int):
                fail("round()'s digits must be a whole number")
            if digits.value > MAX_ROUND_DIGITS:  # type: ignore[union-attr]
                fail(f"round()'s digits must be at most {MAX_ROUND_DIGITS}")
        for arg in node.args:
            _check(arg, source, indent)
    else:
        fail(f"'{ast.unparse(node)}' is not allowed")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _walk_fields(node: ast.AST, quoted: dict[str, str], found: list[str]) -> None:
    if isinstance(node, ast.Name | ast.Attribute):
        path = _dotted(node) or ""
        found.append(quoted.get(path, path))
    elif isinstance(node, ast.Call):
        for arg in node.args:
            _walk_fields(arg, quoted, found)
    else:
        for child in ast.iter_child_nodes(node):
            _walk_fields(child, quoted, found)


# ---- compiling -----------------------------------------------------------------------------------


def _nonzero(divisor: pl.Expr, op: Callable[[], pl.Expr]) -> pl.Expr:
    # Division by zero is a missing result, not infinity (the spec's rule for calculations).
    return pl.when(divisor != 0).then(op())


class _Compiler:
    def __init__(self, schema: pl.Schema, quoted: dict[str, str], param: str):
        self.schema, self.quoted, self.param = schema, quoted, param

    def compile(self, node: ast.expr) -> pl.Expr:
        if isinstance(node, ast.Constant):
            return pl.lit(node.value)
        if isinstance(node, ast.Name | ast.Attribute):
            return self._field(self.quoted.get(_dotted(node) or "", _dotted(node) or ""))
        if isinstance(node, ast.UnaryOp):
            operand = self.compile(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self._binary(_OPERATORS[type(node.op)], self.compile(node.left), self.compile(node.right))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return self._call(node.func.id, node.args)

    def _field(self, path: str) -> pl.Expr:
        expr, dtype = field(path, self.schema, self.param)
        if not is_numeric(dtype):
            raise TransformError(
                f"expression needs numeric fields, but '{path}' is {dtype}", param=self.param
            )
        return expr

    def _binary(self, op: str, left: pl.Expr, right: pl.Expr) -> pl.Expr:
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/":
            return _nonzero(right, lambda: left / right)
        if op == "//":
            return _nonzero(right, lambda: left // right)
        if op == "%":
            return _nonzero(right, lambda: left % right)
        return left.cast(pl.Float64).pow(right)

    def _call(self, name: str, args: list[ast.expr]) -> pl.Expr:
        if name == "round":
            digits = args[1].value if len(args) == 2 else 0  # type: ignore[attr-defined]
            return self.compile(args[0]).round(digits, mode="half_away_from_zero")
        values = [self.compile(a) for a in args]
        if name == "min":
            return pl.min_horizontal(values)
        if name == "max":
            return pl.max_horizontal(values)
        x = values[0].cast(pl.Float64)
        if name == "log":
            base = values[1] if len(values) == 2 else pl.lit(math.e)
            return pl.when(x > 0).then(x.log(math.e) / base.cast(pl.Float64).log(math.e))
        if name == "sqrt":
            return pl.when(x >= 0).then(x.sqrt())
        return {"abs": values[0].abs(), "exp": x.exp(), "floor": x.floor(), "ceil": x.ceil()}[name]
