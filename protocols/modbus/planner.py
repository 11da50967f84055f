"""Request planning: coalesce the tags of a device into as few read requests as possible.

Per table, tags sorted by address are merged into one request while the unused registers between
two tags stay within `max_gap` and the request stays within `max_registers_per_request` (or
`max_bits_per_request` for coils and discrete inputs). Reading a few unused registers is cheaper
than a round trip: one request costs about as much as 100 registers of payload.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.modbus.config import BIT_TABLES, ModbusDevice

TABLE_ORDER = ("coil", "discrete", "holding", "input")
FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True)
class ReadRequest:
    table: str
    unit_id: int
    address: int
    count: int
    tags: tuple[int, ...]  # indices into device.tags, in address order

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.table]

    def to_dict(self) -> dict:
        return {
            "table": self.table,
            "unit_id": self.unit_id,
            "address": self.address,
            "count": self.count,
            "tags": list(self.tags),
        }


def plan_requests(device: ModbusDevice) -> list[ReadRequest]:
    requests: list[ReadRequest] = []
    for table in TABLE_ORDER:
        limit = device.max_bits_per_request if table in BIT_TABLES else device.max_registers_per_request
        members = sorted(
            (i for i, t in enumerate(device.tags) if t.table == table),
            key=lambda i: (device.tags[i].address, device.tags[i].width),
        )
        start = end = -1  # end: one past the last register of the open request
        current: list[int] = []
        for i in members:
            tag = device.tags[i]
            tag_end = tag.address + tag.width
            if current and tag.address - end <= device.max_gap and max(end, tag_end) - start <= limit:
                current.append(i)
                end = max(end, tag_end)
                continue
            if current:
                requests.append(ReadRequest(table, device.unit_id, start, end - start, tuple(current)))
            current, start, end = [i], tag.address, tag_end
        if current:
            requests.append(ReadRequest(table, device.unit_id, start, end - start, tuple(current)))
    return requests
