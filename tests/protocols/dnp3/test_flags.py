"""Flag octet -> quality: golden cases from a file, and properties over every octet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.tags import QUALITIES
from protocols.dnp3.config import PREFIXES
from protocols.dnp3.flags import ONLINE, flag_names, quality_of

GOLDEN = json.loads((Path(__file__).parent / "golden" / "flags.json").read_text())["cases"]
POINT_TYPES = sorted(PREFIXES)
RANK = {"good": 0, "uncertain": 1, "bad": 2}
KNOWN_REASONS = {
    "offline",
    "comm_lost",
    "restart",
    "remote_forced",
    "local_forced",
    "chatter_filter",
    "over_range",
    "reference_err",
    "rollover",
    "discontinuity",
}


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"{c['point_type']}-{c['flags']}")
def test_golden_flag_cases(case):
    assert quality_of(case["point_type"], int(case["flags"], 16)) == (case["quality"], case["reason"])


octets = st.integers(min_value=0, max_value=255)
types = st.sampled_from(POINT_TYPES)


@given(types, octets)
def test_quality_is_total_and_reason_names_known_flags(point_type, flags):
    quality, reason = quality_of(point_type, flags)
    assert quality in QUALITIES
    assert (reason is None) == (quality == "good")
    if reason is not None:
        assert set(reason.split("+")) <= KNOWN_REASONS


@given(types, octets)
def test_good_means_online_and_nothing_else(point_type, flags):
    quality, _ = quality_of(point_type, flags)
    assert (quality == "good") == (bool(flags & ONLINE) and not flag_names(point_type, flags))


@given(types, octets)
def test_offline_or_comm_lost_is_always_bad(point_type, flags):
    quality, reason = quality_of(point_type, flags | 0x04)
    assert quality == "bad" and reason.startswith("comm_lost")
    assert quality_of(point_type, flags & ~ONLINE)[0] == "bad"


@given(types, octets, st.sampled_from([0x02, 0x04, 0x08, 0x10, 0x20, 0x40]))
def test_raising_a_flag_never_improves_quality(point_type, flags, bit):
    before, _ = quality_of(point_type, flags & ~bit)
    after, _ = quality_of(point_type, flags | bit)
    assert RANK[after] >= RANK[before]
