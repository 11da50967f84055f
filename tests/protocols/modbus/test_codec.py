"""Codec: golden cases (register words -> value) for every type and order, and round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus.codec import BlockDecoder, decode_tag, encode_tag
from protocols.modbus.config import ModbusTag

GOLDEN = Path(__file__).parent / "golden" / "codec"
CASES = [
    pytest.param(case, id=f"{path.stem}[{i}]")
    for path in sorted(GOLDEN.glob("*.json"))
    for i, case in enumerate(json.loads(path.read_text()))
]


def make_tag(spec: dict, address: int = 0, name: str = "t") -> ModbusTag:
    return ModbusTag(name=name, address=address, **spec)


def same(a, b) -> bool:
    if isinstance(b, float | int) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
    return a == b


def test_golden_files_exist():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES)
def test_golden_decode_and_encode(case):
    tag = make_tag(case["tag"])
    assert same(decode_tag(tag, case["words"]), case["expected"])
    if case.get("encodes", True):  # false: other bits of the register are set too
        assert encode_tag(tag, case["expected"]) == case["words"]


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_one_block_decodes_every_golden_case_of_a_file(path):
    """The block decoder (one struct over many tags, gaps between them) agrees with the cases."""
    cases = [c for c in json.loads(path.read_text()) if c["tag"].get("table", "holding") == "holding"]
    tags, block = [], []
    for i, case in enumerate(cases):
        block += [0xDEAD] * (i % 3)  # unused registers between tags
        tags.append(make_tag(case["tag"], address=100 + len(block), name=f"t{i}"))
        block += case["words"]
    values = BlockDecoder(tags, 100).decode(block)
    assert all(same(v, c["expected"]) for v, c in zip(values, cases, strict=True))


def test_bit_block_picks_offsets():
    tags = [ModbusTag(name=f"c{i}", table="coil", address=a, type="bool") for i, a in enumerate((3, 5, 9))]
    bits = [i in (5, 9) for i in range(16)]
    assert BlockDecoder(tags, 0).decode(bits) == [False, True, True]


ORDERS = st.sampled_from(["big", "little"])
INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


@given(st.sampled_from(sorted(INT_RANGES)), st.data(), ORDERS, ORDERS)
def test_integers_round_trip(kind, data, byte_order, word_order):
    low, high = INT_RANGES[kind]
    value = data.draw(st.integers(low, high))
    tag = ModbusTag(name="t", address=0, type=kind, byte_order=byte_order, word_order=word_order)
    words = encode_tag(tag, value)
    assert all(0 <= w <= 0xFFFF for w in words) and len(words) == tag.width
    assert decode_tag(tag, words) == value


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), ORDERS, ORDERS)
def test_float32_round_trip(value, byte_order, word_order):
    tag = ModbusTag(name="t", address=0, type="float32", byte_order=byte_order, word_order=word_order)
    assert decode_tag(tag, encode_tag(tag, value)) == value


@given(st.floats(allow_nan=False), ORDERS, ORDERS)
def test_float64_round_trip(value, byte_order, word_order):
    tag = ModbusTag(name="t", address=0, type="float64", byte_order=byte_order, word_order=word_order)
    assert decode_tag(tag, encode_tag(tag, value)) == value


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16), ORDERS)
def test_string_round_trip(text, byte_order):
    tag = ModbusTag(name="t", address=0, type="string", length=8, byte_order=byte_order)
    assert decode_tag(tag, encode_tag(tag, text)) == text


@given(st.integers(0, 15), st.booleans())
def test_bit_round_trip(bit, value):
    tag = ModbusTag(name="t", address=0, type="bit", bit=bit)
    assert decode_tag(tag, encode_tag(tag, value)) is value


@given(st.integers(-30000, 30000), st.sampled_from([0.1, 0.01, 2.0]), st.floats(-100, 100))
def test_scale_and_offset_round_trip(raw, scale, offset):
    tag = ModbusTag(name="t", address=0, type="int16", scale=scale, offset=offset)
    value = raw * scale + offset
    assert encode_tag(tag, value) == encode_tag(ModbusTag(name="r", address=0, type="int16"), raw)
    assert math.isclose(decode_tag(tag, encode_tag(tag, value)), value, abs_tol=1e-9)
