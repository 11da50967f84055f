"""Register words <-> engineering values, for every type, byte order and word order.

Conventions (what "big"/"little" mean here, as device manuals use them):
- a register is one 16-bit word as the protocol delivers it;
- `byte_order: little` swaps the two bytes inside every register;
- `word_order: little` puts the least significant register first (32/64-bit types only);
- strings read registers in address order, two characters per register, NULs/spaces trimmed.
Both swaps are their own inverse, so encoding uses the same reordering as decoding.

Decoding a block is done by C code, not a Python loop per value: a `BlockDecoder` is compiled
once per request into an `itemgetter` that picks the registers of every tag in big-endian word
order, and ONE `struct.Struct` that unpacks all the tags' values from them at once.
(numpy is not a dependency of the project; struct over a whole block is as fast here.)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from protocols.modbus.config import BIT_TABLES, ModbusTag

STRUCT_CODES = {
    "bit": "H",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "float64": "d",
}


def _swap_bytes(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def word_indices(tag: ModbusTag, first: int) -> list[int]:
    """Indices of the tag's registers (it starts at `first`), most significant word first."""
    indices = list(range(first, first + tag.width))
    if tag.word_order == "little" and tag.type != "string":
        indices.reverse()
    return indices


def struct_code(tag: ModbusTag) -> str:
    return f"{2 * tag.width}s" if tag.type == "string" else STRUCT_CODES[tag.type]


def _finish(tag: ModbusTag, raw: Any) -> Any:
    """Raw unpacked value -> engineering value."""
    if tag.type == "bit":
        return bool((raw >> tag.bit) & 1)
    if tag.type == "string":
        return raw.decode("latin-1").rstrip("\x00 ")
    return raw * tag.scale + tag.offset if (tag.scale != 1.0 or tag.offset != 0.0) else float(raw)


def decode_tag(tag: ModbusTag, words: Sequence[int] | Sequence[bool]) -> Any:
    """One tag's value from its own registers (or bit): float, bool or str."""
    if tag.table in BIT_TABLES:
        return bool(words[0])
    return BlockDecoder([tag], tag.address).decode(words)[0]


class BlockDecoder:
    """Decodes the tags of one request from the block of registers (or bits) it returned.
    Values come back in tag order: floats (scaled), bools for bits and coils, str for strings."""

    def __init__(self, tags: Sequence[ModbusTag], start: int):
        self.tags = list(tags)
        self.bits = bool(self.tags) and self.tags[0].table in BIT_TABLES
        picks: list[int] = []
        swaps: list[int] = []
        for tag in self.tags:
            indices = [start] if self.bits else word_indices(tag, tag.address)
            if tag.byte_order == "little" and not self.bits:
                swaps.extend(range(len(picks), len(picks) + len(indices)))
            picks.extend(i - start for i in indices)
        self.size = max(picks) + 1 if picks else 0  # registers the block must hold
        self._pick = itemgetter(*picks) if len(picks) > 1 else (lambda block, _i=picks[0]: (block[_i],))
        self._swaps = swaps
        if self.bits:
            self._pick = (
                itemgetter(*[t.address - start for t in self.tags])
                if len(self.tags) > 1
                else (lambda block, _i=self.tags[0].address - start: (block[_i],))
            )
            self.size = max(t.address - start for t in self.tags) + 1
            return
        self._pack = struct.Struct(f">{len(picks)}H").pack
        self._unpack = struct.Struct(">" + "".join(struct_code(t) for t in self.tags)).unpack
        # Only tags that need more than a float() go through _finish (why: speed of plain tags).
        self._special = [
            i
            for i, t in enumerate(self.tags)
            if t.type in ("bit", "string") or t.scale != 1.0 or t.offset != 0.0
        ]

    def decode(self, block: Sequence[int] | Sequence[bool]) -> list[Any]:
        if self.bits:
            return [bool(b) for b in self._pick(block)]
        words = self._pick(block)
        if self._swaps:
            words = list(words)
            for i in self._swaps:
                words[i] = _swap_bytes(words[i])
        values = list(self._unpack(self._pack(*words)))
        for i in self._special:
            values[i] = _finish(self.tags[i], values[i])
        return values


def encode_tag(tag: ModbusTag, value: Any) -> list[int]:
    """A value -> the registers (or one bit, 0/1) a device would hold for it, in address order.
    For `bit` tags only that bit is set: callers OR it into the register the bits share."""
    if tag.table in BIT_TABLES:
        return [1 if value else 0]
    if tag.type == "bit":
        word = (1 << tag.bit) if value else 0
        return [_swap_bytes(word) if tag.byte_order == "little" else word]
    if tag.type == "string":
        data = str(value).encode("latin-1")
        size = 2 * tag.width
        if len(data) > size:
            raise ValueError(f"tag '{tag.name}': '{value}' is longer than {size} characters")
        data = data.ljust(size, b"\x00")
    else:
        raw = (float(value) - tag.offset) / tag.scale
        if tag.type.startswith(("int", "uint")):
            raw = round(raw)
        data = struct.pack(">" + STRUCT_CODES[tag.type], raw)
    canonical = list(struct.unpack(f">{tag.width}H", data))  # most significant word first
    words = [0] * tag.width
    for position, index in enumerate(word_indices(tag, 0)):
        words[index] = canonical[position]
    if tag.byte_order == "little":
        words = [_swap_bytes(w) for w in words]
    return words
