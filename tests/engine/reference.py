"""A deliberately simple, per-record reference of some transformations (plain Python over dicts).

It restates the documented semantics one record at a time, so the property tests can check that the
columnar engine means the same thing. It is slow on purpose and is never used by the engine.

`types` maps each column to "int", "float" or "str" (the column's type decides how literals compare).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

Record = dict[str, Any]
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


# ---- conditions ----------------------------------------------------------------------------------


def matches(record: Record, cond: dict, types: dict[str, str]) -> bool:
    if "all" in cond:
        return all(matches(record, c, types) for c in cond["all"])
    if "any" in cond:
        return any(matches(record, c, types) for c in cond["any"])
    if "not" in cond:
        return not matches(record, cond["not"], types)
    value, op, literal = record[cond["field"]], cond["operator"], cond.get("value")
    if op == "is_null" or (op == "equals" and literal is None):
        return value is None
    if op == "is_not_null" or (op == "not_equals" and literal is None):
        return value is not None
    if value is None:
        return False  # a null never matches anything else
    if op in ("contains", "starts_with", "ends_with", "matches"):
        text = str(value)
        return {
            "contains": lambda: literal in text,
            "starts_with": lambda: text.startswith(literal),
            "ends_with": lambda: text.endswith(literal),
            "matches": lambda: re.search(literal, text) is not None,
        }[op]()
    literals = literal if isinstance(literal, list) else [literal]
    if types[cond["field"]] == "str" and all(_is_number(v) for v in literals):
        value = _text_number(value)  # a number against text compares numerically
        if value is None:
            return False
    elif types[cond["field"]] == "str":
        literals = [str(v) for v in literals]
    if op == "in":
        return value in literals
    if op == "not_in":
        return value not in literals
    if op == "between":
        return literals[0] <= value <= literals[1]
    target = literals[0]
    return {
        "equals": value == target,
        "not_equals": value != target,
        "gt": value > target,
        "gte": value >= target,
        "lt": value < target,
        "lte": value <= target,
    }[op]


def record_filter(records: list[Record], cond: dict, types: dict[str, str]) -> list[Record]:
    return [r for r in records if matches(r, cond, types)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_number(text: str) -> float | None:
    stripped = text.strip()
    return float(stripped) if _NUMBER_TEXT.match(stripped) else None


# ---- field_calculation ---------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _apply(op: str, left: Any, right: Any) -> Any:
    if left is None or right is None:
        return None
    if op in ("/", "//", "%") and right == 0:
        return None  # division by zero is missing, not infinite
    if op in ("//", "%") and (isinstance(left, float) or isinstance(right, float)):
        # With decimals, floor division is floor(left / right) of the rounded quotient, so 1.0 % 0.1 is
        # 0.0 (Python's own % works on the exact binary values and gives 0.0999...).
        quotient = left / right
        floored = float(math.floor(quotient)) if math.isfinite(quotient) else quotient
        return floored if op == "//" else left - right * floored
    return {
        "+": lambda: left + right,
        "-": lambda: left - right,
        "*": lambda: left * right,
        "/": lambda: left / right,
        "//": lambda: left // right,
        "%": lambda: left % right,
    }[op]()


def calculate(record: Record, operation: str, fields: list[str]) -> Any:
    symbol = {"multiply": "*", "add": "+", "subtract": "-", "divide": "/"}[operation]
    result = record[fields[0]]
    for name in fields[1:]:
        result = _apply(symbol, result, record[name])
    return _finite(result)


def evaluate(record: Record, expression: str) -> Any:
    """Evaluate + - * / // % and unary minus over field names and numbers, by walking the syntax tree."""
    symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return record[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = walk(node.operand)
            return None if operand is None else -operand
        if isinstance(node, ast.BinOp):
            return _apply(symbols[type(node.op)], walk(node.left), walk(node.right))
        raise ValueError(f"the reference does not know {ast.dump(node)}")

    return _finite(walk(ast.parse(expression, mode="eval").body))


# ---- string operations ---------------------------------------------------------------------------


def string_operation(value: str | None, operation: str) -> str | None:
    if value is None:
        return None
    return {
        "title_case": value.title,
        "lowercase": value.lower,
        "uppercase": value.upper,
        "trim": value.strip,
    }[operation]()


# ---- aggregation ---------------------------------------------------------------------------------


def aggregate(records: list[Record], key: str, field: str) -> list[Record]:
    """sum, count, min, max and average of `field` per `key`, sorted by key with the null key last."""
    groups: dict[Any, list[Any]] = {}
    for record in records:
        groups.setdefault(record[key], []).append(record[field])
    rows = []
    for group in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
        values = [v for v in groups[group] if v is not None]
        rows.append(
            {
                key: group,
                "sum": sum(values),
                "count": len(values),
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "average": sum(values) / len(values) if values else None,
            }
        )
    return rows


# ---- join ----------------------------------------------------------------------------------------


def join(
    left: list[Record],
    right: list[Record],
    primary_key: str,
    foreign_key: str,
    how: str,
    columns: tuple[list[str], list[str]],
) -> list[Record]:
    """inner/left join; the foreign key is not repeated; clashing right names get `_right`.

    `columns` are the (left, right) column names, which empty inputs cannot tell.
    """
    left_names, right_names = columns[0], [n for n in columns[1] if n != foreign_key]
    renamed = {n: f"{n}_right" if n in left_names else n for n in right_names}
    out = []
    for record in left:
        key = record[primary_key]
        partners = [r for r in right if key is not None and r[foreign_key] == key]
        for partner in partners:
            out.append({**record, **{renamed[n]: partner[n] for n in right_names}})
        if not partners and how == "left":
            out.append({**record, **{renamed[n]: None for n in right_names}})
    return out


# ---- field_addition, email validation and a whole linear chain ------------------------------------

EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
)


def valid_email(value: str | None) -> bool:
    return value is None or EMAIL.search(value) is not None  # null fails only not_null


def run_chain(records: list[Record], steps: list[dict], types: dict[str, str], now: Any) -> tuple[list, list]:
    """Interpret linear-form steps one record at a time, as a per-message flow engine does.

    Covers the benchmark chain: field_mapping (string operations), field_calculation (the four
    operations), record_filter, field_addition (literal or current_timestamp) and
    field_validation email_format with reject. Returns (kept records, rejected records).
    """
    kept, rejected = [], []
    for record in records:
        for step in steps:
            kind = step["type"]
            if kind in ("field_mapping", "field_operation"):
                record[step["field_name"]] = string_operation(record[step["field_name"]], step["operation"])
            elif kind == "field_calculation":
                params = step["parameters"]
                out = params.get("output_field", step.get("field_name"))
                record[out] = calculate(record, step["operation"], params["source_fields"])
            elif kind == "record_filter":
                if not matches(record, step["condition"], types):
                    record = None
                    break
            elif kind == "field_addition":
                record[step["field_name"]] = now if step["value"] == "current_timestamp" else step["value"]
            elif kind == "field_validation" and step["validation_type"] == "email_format":
                if not valid_email(record[step["field_name"]]):
                    rejected.append(
                        {**record, "_reject_reason": f"{step['field_name']}: not a valid email address"}
                    )
                    record = None
                    break
            else:
                raise ValueError(f"the reference chain does not know {kind}")
        if record is not None:
            kept.append(record)
    return kept, rejected
