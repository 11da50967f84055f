"""The safe arithmetic expression language of field_calculation."""

from __future__ import annotations

import math

import polars as pl
import pytest

from engine.errors import TransformError
from engine.transforms.expression import ExpressionError, compile_expression, parse_expression

FRAME = pl.DataFrame(
    {
        "price": [10.0, 2.5, None, 4.0],
        "quantity": [3, 4, 1, 0],
        "discount": [0.1, 0.0, 0.5, 0.2],
        "unit price": [1.0, 2.0, 3.0, 4.0],
        "m": [{"a": 2, "b": {"c": 5}}] * 4,
        "name": ["a", "b", "c", "d"],
    }
)


def values(text: str) -> list:
    return FRAME.with_columns(compile_expression(text, FRAME.collect_schema()).alias("r"))["r"].to_list()


def close(actual: list, expected: list) -> bool:
    return all(
        (a is None and e is None) or (a is not None and e is not None and math.isclose(a, e, rel_tol=1e-12))
        for a, e in zip(actual, expected, strict=True)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("price * quantity * (1 - discount)", [27.0, 10.0, None, 0.0]),
        ("quantity + 1", [4, 5, 2, 1]),
        ("-quantity", [-3, -4, -1, 0]),
        ("+quantity - 2 * 3", [-3, -2, -5, -6]),
        ("quantity ** 2", [9.0, 16.0, 1.0, 0.0]),
        ("quantity // 2", [1, 2, 0, 0]),
        ("quantity % 2", [1, 0, 1, 0]),
        ("price / quantity", [10 / 3, 0.625, None, None]),
        ("price // quantity", [3.0, 0.0, None, None]),
        ("quantity % 0", [None, None, None, None]),
        ("`unit price` * 2", [2.0, 4.0, 6.0, 8.0]),
        ("m.a * m.b.c", [10, 10, 10, 10]),
        ("abs(0 - quantity)", [3, 4, 1, 0]),
        ("round(price / 3, 2)", [3.33, 0.83, None, 1.33]),
        ("round(2.5)", [3.0] * 4),
        ("min(quantity, 2, discount * 10)", [1.0, 0.0, 1.0, 0.0]),
        ("max(quantity, 2)", [3, 4, 2, 2]),
        ("sqrt(quantity)", [math.sqrt(3), 2.0, 1.0, 0.0]),
        ("sqrt(0 - quantity)", [None, None, None, 0.0]),
        ("log(quantity)", [math.log(3), math.log(4), 0.0, None]),
        ("log(quantity, 2)", [math.log2(3), 2.0, 0.0, None]),
        ("exp(discount)", [math.exp(0.1), 1.0, math.exp(0.5), math.exp(0.2)]),
        ("floor(price / 3)", [3.0, 0.0, None, 1.0]),
        ("ceil(price / 3)", [4.0, 1.0, None, 2.0]),
        ("  1.5e1 + quantity", [18.0, 19.0, 16.0, 15.0]),
    ],
)
def test_evaluation(text, expected):
    result = values(text)
    if any(isinstance(v, float) for v in expected):
        assert close(result, expected), result
    else:
        assert result == expected


def test_field_paths_are_listed_once_in_order():
    parsed = parse_expression("price * quantity + `unit price` - price + m.b.c + max(discount, 1)")
    assert parsed.field_paths() == ["price", "quantity", "unit price", "m.b.c", "discount"]


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("price * ", 8, "ends too early"),
        ("a + * b", 5, "invalid syntax"),
        ("price + __import__('os').system('x')", 9, "unknown function"),
        ("price if quantity else 1", 1, "is not allowed"),
        ("price > 1", 1, "is not allowed"),
        ("foo(price)", 1, "unknown function 'foo'"),
        ("price.real()", 1, "unknown function"),
        ("'abc' + price", 1, "is not a number"),
        ("round(price, quantity)", 1, "digits must be a whole number"),
        ("min(price)", 1, "takes 2 or more"),
        ("sqrt(price, 2)", 1, "takes 1 positional"),
        ("abs(x=price)", 1, "takes 1 positional"),
        ("price + [1][0]", 9, "is not allowed"),
        ("lambda: 1", 1, "is not allowed"),
        ("True + price", 1, "is not a number"),
    ],
)
def test_rejected_with_position(text, position, fragment):
    with pytest.raises(ExpressionError) as err:
        parse_expression(text)
    assert err.value.position == position, str(err.value)
    assert fragment in str(err.value)
    assert f"at character {position}" in str(err.value)


def test_position_counts_characters_after_backquotes_and_unicode():
    with pytest.raises(ExpressionError) as err:
        parse_expression("`unit price` + 'é'")
    assert err.value.position == 16


def test_unknown_field_and_text_field_are_transform_errors():
    with pytest.raises(TransformError) as err:
        compile_expression("price * nope", FRAME.collect_schema())
    assert err.value.param == "parameters.expression" and "nope" in str(err.value)
    with pytest.raises(TransformError, match="numeric"):
        compile_expression("price * name", FRAME.collect_schema())


def test_never_calls_python_eval(monkeypatch):
    import builtins

    def forbidden(*args, **kwargs):
        raise AssertionError("eval must not be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    assert values("quantity * 2") == [6, 8, 2, 0]
