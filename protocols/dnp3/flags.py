"""DNP3 point flags (IEEE 1815-2012 tables 4-7 to 4-9) -> tag quality and reason.

One flag octet per value. Bits 0x01-0x10 mean the same for every point type; 0x20 and 0x40 depend
on the type (0x20 is CHATTER_FILTER on binaries, OVER_RANGE on analogs, ROLLOVER on counters), and
0x80 (binaries) or 0xC0 (double-bit binaries) is the state, not a flag. Kept free of opendnp3 so the
mapping is cheap to test.

- bad: COMM_LOST, REFERENCE_ERR (the value cannot be trusted at all), or ONLINE clear;
- uncertain: online, but not updated since a restart, forced, over range, chattering, rolled over
  or discontinuous (a real number, but not the plain measurement);
- good: ONLINE and nothing else.
`reason` names every abnormal flag, worst first, joined by `+` (`comm_lost`, `over_range+local_forced`),
`offline` when ONLINE is clear and no flag says why; null when good.
"""

from __future__ import annotations

from engine.tags import Quality

ONLINE = 0x01

_COMMON = ((0x04, "comm_lost"), (0x02, "restart"))
_FORCED = ((0x08, "remote_forced"), (0x10, "local_forced"))
# Worst first: what a reader most needs to know leads the reason.
_FLAGS: dict[str, tuple[tuple[int, str], ...]] = {
    "binary": (*_COMMON, *_FORCED, (0x20, "chatter_filter")),
    "analog": (
        (0x04, "comm_lost"),
        (0x40, "reference_err"),
        (0x02, "restart"),
        (0x20, "over_range"),
        *_FORCED,
    ),
    "counter": (*_COMMON, (0x40, "discontinuity"), (0x20, "rollover"), *_FORCED),
}
_BAD = {"comm_lost", "reference_err"}

FAMILY = {
    "binary_input": "binary",
    "double_bit_binary": "binary",
    "binary_output_status": "binary",
    "analog_input": "analog",
    "analog_output_status": "analog",
    "counter": "counter",
    "frozen_counter": "counter",
}


def flag_names(point_type: str, flags: int) -> list[str]:
    """The abnormal flags set in `flags`, worst first (ONLINE and the binary state excluded)."""
    return [name for bit, name in _FLAGS[FAMILY[point_type]] if flags & bit]


def quality_of(point_type: str, flags: int) -> tuple[Quality, str | None]:
    """(quality, reason) of a value of `point_type` (a config `PointType`) carrying `flags`."""
    names = flag_names(point_type, flags)
    online = bool(flags & ONLINE)
    if not online and not names:
        names = ["offline"]
    if not names:
        return "good", None
    bad = not online or any(name in _BAD for name in names)
    return ("bad" if bad else "uncertain"), "+".join(names)
