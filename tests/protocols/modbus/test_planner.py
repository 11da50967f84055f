"""Request planner: golden plans (a device's tags -> the requests) and properties."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus.config import ModbusDevice
from protocols.modbus.planner import plan_requests

GOLDEN = Path(__file__).parent / "golden" / "plans"


def expand_tags(spec) -> list[dict]:
    """A golden file lists tags, or `{"generate": {count, start, step, ...}}` for long runs."""
    if isinstance(spec, list):
        return spec
    gen = dict(spec["generate"])
    count, start, step = gen.pop("count"), gen.pop("start"), gen.pop("step")
    return [{"name": f"t{i}", "address": start + i * step, **gen} for i in range(count)]


def expand_indices(spec) -> list[int]:
    if isinstance(spec, str):
        low, high = map(int, spec.split("-"))
        return list(range(low, high + 1))
    return spec


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_plan(path):
    case = json.loads(path.read_text())
    device = ModbusDevice.model_validate({**case["device"], "tags": expand_tags(case["device"]["tags"])})
    expected = [{**r, "tags": expand_indices(r["tags"])} for r in case["requests"]]
    assert [r.to_dict() for r in plan_requests(device)] == expected


TAGS = st.lists(
    st.tuples(st.integers(0, 400), st.sampled_from(["uint16", "float32", "float64"])), min_size=1, max_size=60
)


@given(TAGS, st.integers(0, 20), st.integers(4, 125))
def test_every_tag_is_read_once_within_the_limits(tags, gap, limit):
    device = ModbusDevice(
        name="d",
        max_gap=gap,
        max_registers_per_request=limit,
        tags=[{"name": f"t{i}", "address": a, "type": t} for i, (a, t) in enumerate(tags)],
    )
    plan = plan_requests(device)
    assert sorted(i for r in plan for i in r.tags) == list(range(len(tags)))
    for r in plan:
        assert 1 <= r.count <= limit
        for i in r.tags:
            tag = device.tags[i]
            assert r.address <= tag.address and tag.address + tag.width <= r.address + r.count
    # Requests of one table overlap only where the tags themselves overlap (a register read as
    # two types, which is legitimate: a float32 at 0 and a float64 at 1 that cannot share one
    # 4-register request), and neighbours are further apart than max_gap or too big to merge.
    for a, b in pairwise(plan):
        first_of_b = min(device.tags[i].address for i in b.tags)
        end_of_a = max(device.tags[i].address + device.tags[i].width for i in a.tags)
        assert a.address + a.count <= b.address or first_of_b < end_of_a
        merged = max(b.address + b.count, a.address + a.count) - a.address
        assert b.address - (a.address + a.count) > gap or merged > limit
