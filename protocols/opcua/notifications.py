"""Publish responses decoded straight into columns (issue 12): the fast path of a subscription.

asyncua decodes every PublishResponse with its generic `struct_from_binary` into Python objects
(DataChangeNotification, MonitoredItemNotification, DataValue, Variant, datetime...), which cost
most of our source's CPU at thousands of values a second. `decode_publish` reads the same bytes
(exactly the `data` asyncua's `UaSession.publish` hands to `struct_from_binary`) with
`struct.unpack_from` into columns: client handles, values, status codes, and source and server
timestamps as epoch microseconds.

It handles what is exact to handle, and returns None for everything else, so that the caller lets
asyncua decode that message as before (never a guess): a ServiceResult that is not Good, response
diagnostics, a string table or an additional header, notification data that is not a
DataChangeNotification (StatusChangeNotification, events...), arrays and matrices, Variant types
other than Boolean, SByte..UInt64, Float, Double, String, DateTime, ByteString and Null, unknown
DataValue mask bits, diagnostic infos, trailing or missing bytes. A DataValue carrying both
SourcePicoseconds and a ServerTimestamp falls back too: asyncua writes and reads ServerTimestamp
before SourcePicoseconds (its dataclass's field order), the OPC UA specification after; only there
do the two orders disagree.

The values are what asyncua's decoding gives (`DataValue.Value.Value`): float for Float and
Double, int for the integers, bool, str (UTF-8 with `surrogateescape`, as asyncua), bytes,
datetime (asyncua's own conversion) or None. Timestamps follow `client._utc`: a FILETIME of 0 (or
below 1 µs, or negative) or from 9999-12-31 23:59:59 on is None.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

# The NodeIds (namespace 0) of the encodings read here.
PUBLISH_RESPONSE = 829  # PublishResponse_Encoding_DefaultBinary
DATA_CHANGE = 811  # DataChangeNotification_Encoding_DefaultBinary

# Variant built-in type -> struct format of its fixed-size scalar.
_FIXED = {
    1: "?",  # Boolean (asyncua: struct "?": any byte but 0 is True)
    2: "b",  # SByte
    3: "B",  # Byte
    4: "h",  # Int16
    5: "H",  # UInt16
    6: "i",  # Int32
    7: "I",  # UInt32
    8: "q",  # Int64
    9: "Q",  # UInt64
    10: "f",  # Float
    11: "d",  # Double
}
_FIXED_STRUCTS = {vt: struct.Struct("<" + fmt) for vt, fmt in _FIXED.items()}
NULL, STRING, DATETIME, BYTESTRING = 0, 12, 13, 15
HANDLED_TYPES = frozenset(_FIXED) | {NULL, STRING, DATETIME, BYTESTRING}

# DataValue encoding mask bits.
HAS_VALUE, HAS_STATUS, HAS_SOURCE_TS, HAS_SERVER_TS, HAS_SOURCE_PICO, HAS_SERVER_PICO = 1, 2, 4, 8, 16, 32

# FILETIME (100 ns since 1601) -> epoch microseconds; the valid range as `client._utc` has it.
FILETIME_OFFSET_US = 11_644_473_600_000_000
_END_US = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
    microseconds=1
)
FT_LOW = 10  # below: 1601-01-01 00:00:00 or earlier, "no time"
FT_HIGH = (_END_US + FILETIME_OFFSET_US) * 10  # from here: the end of time

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_HANDLE_MASK = struct.Struct("<IB")
_HEADER = struct.Struct("<qII")  # ResponseHeader: Timestamp, RequestHandle, ServiceResult
_SEQ_TIME = struct.Struct("<Iq")  # NotificationMessage: SequenceNumber, PublishTime

# A Struct of BLOCK_ITEMS items takes ~190 bytes an item (2,048: ~0.4 MB) and ~160 us to make
# (2,500 items) against ~230 us to unpack them; struct.iter_unpack and a transpose took ~630 us.
BLOCK_ITEMS = 2048
_BLOCKS: dict[tuple[str, int], struct.Struct] = {}  # (item format, count) -> Struct of them all
_MAX_BLOCKS = 8


class NotDecoded(Exception):
    """Internal: this message is left to asyncua."""


class PublishColumns:
    """One decoded PublishResponse: what `_publish_loop` needs, and the values in columns."""

    __slots__ = (
        "handles",
        "more_notifications",
        "notification_count",
        "sequence_number",
        "server_us",
        "source_us",
        "statuses",
        "subscription_id",
        "types",
        "values",
    )

    def __init__(self) -> None:
        self.subscription_id = 0
        self.sequence_number = 0
        self.more_notifications = False
        self.notification_count = 0  # NotificationData entries (0: a keep-alive)
        self.handles: list[int] = []
        self.values: list[Any] = []
        self.statuses: list[int] = []
        self.source_us: list[int | None] = []
        self.server_us: list[int | None] = []
        self.types: set[int] = set()  # the Variant types met (0: null, or no value at all)

    def __len__(self) -> int:
        return len(self.handles)


def filetime_us(ft: int) -> int | None:
    """A FILETIME as epoch microseconds; None for "no time" (as `client._utc`)."""
    if ft < FT_LOW or ft >= FT_HIGH:
        return None
    return ft // 10 - FILETIME_OFFSET_US


def _times(fts: list[int]) -> list[int | None]:
    if not fts:
        return []
    if min(fts) >= FT_LOW and max(fts) < FT_HIGH:
        off = FILETIME_OFFSET_US
        return [ft // 10 - off for ft in fts]
    return [filetime_us(ft) for ft in fts]


def decode_publish(data: Any, pos: int = 0, end: int | None = None) -> PublishColumns | None:
    """The PublishResponse in `data[pos:end]` (bytes, bytearray or memoryview) as columns, or None
    when asyncua must decode it (see the module's docstring). Never raises."""
    if end is None:
        end = len(data)
    try:
        if end != len(data):
            data = memoryview(data)[:end]
        return _decode(data, pos, end)
    except (NotDecoded, struct.error, IndexError, ValueError, OverflowError, MemoryError):
        return None


def _node_id(buf: Any, p: int) -> tuple[int, int]:
    """A numeric NodeId of namespace 0: (identifier, position after it)."""
    enc = buf[p]
    if enc == 0:
        return buf[p + 1], p + 2
    if enc == 1:
        if buf[p + 1] != 0:
            raise NotDecoded
        return _U16.unpack_from(buf, p + 2)[0], p + 4
    if enc == 2:
        ns, ident = struct.unpack_from("<HI", buf, p + 1)
        if ns != 0:
            raise NotDecoded
        return ident, p + 7
    raise NotDecoded


def _count(buf: Any, p: int, end: int, item_size: int) -> tuple[int, int]:
    """An array length (-1, a null array, is 0) that the bytes left can hold."""
    n = _I32.unpack_from(buf, p)[0]
    if n < -1 or n * item_size > end - p - 4:
        raise NotDecoded
    return max(n, 0), p + 4


def _decode(buf: Any, p: int, end: int) -> PublishColumns:
    type_id, p = _node_id(buf, p)
    if type_id != PUBLISH_RESPONSE:
        raise NotDecoded
    _timestamp, _handle, service_result = _HEADER.unpack_from(buf, p)
    p += 16
    if service_result != 0 or buf[p] != 0:  # a bad result, or ServiceDiagnostics
        raise NotDecoded
    p += 1
    strings, p = _count(buf, p, end, 4)
    if strings:  # a string table: only with diagnostics
        raise NotDecoded
    header_type, p = _node_id(buf, p)  # AdditionalHeader: a null ExtensionObject only
    if header_type != 0 or buf[p] != 0:
        raise NotDecoded
    p += 1
    out = PublishColumns()
    out.subscription_id = _U32.unpack_from(buf, p)[0]
    p += 4
    available, p = _count(buf, p, end, 4)
    p += 4 * available
    out.more_notifications = buf[p] != 0
    p += 1
    out.sequence_number, _publish_time = _SEQ_TIME.unpack_from(buf, p)
    p += 12
    notifications, p = _count(buf, p, end, 2)
    out.notification_count = notifications
    for _ in range(notifications):
        kind, p = _node_id(buf, p)
        if kind != DATA_CHANGE or buf[p] != 1:  # only a DataChangeNotification in a ByteString body
            raise NotDecoded
        length = _I32.unpack_from(buf, p + 1)[0]
        p += 5
        body_end = p + length
        if length < 0 or body_end > end:
            raise NotDecoded
        p = _data_change(buf, p, body_end, out)
        if p != body_end:
            raise NotDecoded
    results, p = _count(buf, p, end, 4)
    p += 4 * results
    diagnostics, p = _count(buf, p, end, 1)
    if diagnostics or p != end:
        raise NotDecoded
    return out


def _item_format(mask: int, vtype: int) -> str | None:
    """The struct format of one MonitoredItemNotification of fixed size, or None."""
    fmt = "IB"
    if mask & HAS_VALUE:
        if vtype not in _FIXED and vtype != NULL:
            return None
        fmt += "B" + _FIXED.get(vtype, "")
    if mask & HAS_STATUS:
        fmt += "I"
    if mask & HAS_SOURCE_TS:
        fmt += "q"
    if mask & HAS_SOURCE_PICO:
        fmt += "H"
    if mask & HAS_SERVER_TS:
        fmt += "q"
    if mask & HAS_SERVER_PICO:
        fmt += "H"
    return fmt


def _block(fmt: str, n: int) -> struct.Struct:
    key = (fmt, n)
    block = _BLOCKS.get(key)
    if block is None:
        if len(_BLOCKS) >= _MAX_BLOCKS:
            _BLOCKS.clear()
        block = _BLOCKS[key] = struct.Struct("<" + fmt * n)
    return block


def _data_change(buf: Any, p: int, end: int, out: PublishColumns) -> int:
    n, p = _count(buf, p, end, 5)
    if n:
        mask = buf[p + 4]
        if mask & ~0x3F or (mask & (HAS_SOURCE_PICO | HAS_SERVER_TS)) == (HAS_SOURCE_PICO | HAS_SERVER_TS):
            raise NotDecoded
        vtype = buf[p + 5] if mask & HAS_VALUE else NULL
        fmt = _item_format(mask, vtype)
        done = fmt is not None and _uniform(buf, p, end, n, mask, vtype, fmt, out)
        p = done if done else _items(buf, p, n, out)
    diagnostics, p = _count(buf, p, end, 1)
    if diagnostics:
        raise NotDecoded
    return p


def _uniform(buf: Any, p: int, end: int, n: int, mask: int, vtype: int, fmt: str, out: PublishColumns) -> int:
    """Every item laid out as the first one (the usual case: one type, the same fields): one
    unpack per BLOCK_ITEMS of them. Returns the position after them, or 0 when they are not
    uniform (nothing is added to `out` then)."""
    k = len(fmt)
    handles: list[int] = []
    values: list[Any] = []
    statuses: list[int] = []
    source: list[int | None] = []
    server: list[int | None] = []
    for start in range(0, n, BLOCK_ITEMS):
        m = min(BLOCK_ITEMS, n - start)
        block = _block(fmt, m)
        if block.size > end - p:
            return 0
        fields = block.unpack_from(buf, p)
        p += block.size
        if fields[1::k].count(mask) != m:
            return 0
        i = 2
        if mask & HAS_VALUE:
            if fields[2::k].count(vtype) != m:
                return 0
            if vtype != NULL:
                values.extend(fields[3::k])
                i = 4
            else:
                values.extend([None] * m)
                i = 3
        else:
            values.extend([None] * m)
        if mask & HAS_STATUS:
            statuses.extend(fields[i::k])
            i += 1
        else:
            statuses.extend([0] * m)
        if mask & HAS_SOURCE_TS:
            source.extend(_times(list(fields[i::k])))
            i += 1
        else:
            source.extend([None] * m)
        if mask & HAS_SOURCE_PICO:
            i += 1
        server.extend(_times(list(fields[i::k])) if mask & HAS_SERVER_TS else [None] * m)
        handles.extend(fields[0::k])
    out.handles.extend(handles)
    out.values.extend(values)
    out.statuses.extend(statuses)
    out.source_us.extend(source)
    out.server_us.extend(server)
    out.types.add(vtype)
    return p


def _items(buf: Any, p: int, n: int, out: PublishColumns) -> int:
    """Item by item (mixed types, strings...)."""
    handles, values, statuses = out.handles, out.values, out.statuses
    source, server, types = out.source_us, out.server_us, out.types
    unpack_hm, unpack_u32, unpack_i64 = _HANDLE_MASK.unpack_from, _U32.unpack_from, _I64.unpack_from
    fixed = _FIXED_STRUCTS
    for _ in range(n):
        handle, mask = unpack_hm(buf, p)
        p += 5
        if mask & ~0x3F or (mask & (HAS_SOURCE_PICO | HAS_SERVER_TS)) == (HAS_SOURCE_PICO | HAS_SERVER_TS):
            raise NotDecoded
        value = None
        vtype = NULL
        if mask & HAS_VALUE:
            vtype = buf[p]
            p += 1
            unpacker = fixed.get(vtype)
            if unpacker is not None:
                value = unpacker.unpack_from(buf, p)[0]
                p += unpacker.size
            elif vtype in (STRING, BYTESTRING):
                length = _I32.unpack_from(buf, p)[0]
                p += 4
                if length >= 0:
                    raw = bytes(buf[p : p + length])
                    if len(raw) != length:
                        raise NotDecoded
                    p += length
                    value = raw.decode("utf-8", "surrogateescape") if vtype == STRING else raw
                elif length != -1:
                    raise NotDecoded
            elif vtype == DATETIME:
                from asyncua.ua.uatypes import win_epoch_to_datetime

                value = win_epoch_to_datetime(unpack_i64(buf, p)[0])
                p += 8
            elif vtype != NULL:  # arrays (bits 6, 7), structures, NodeIds, Guids...
                raise NotDecoded
        types.add(vtype)
        if mask & HAS_STATUS:
            statuses.append(unpack_u32(buf, p)[0])
            p += 4
        else:
            statuses.append(0)
        if mask & HAS_SOURCE_TS:
            source.append(filetime_us(unpack_i64(buf, p)[0]))
            p += 8
        else:
            source.append(None)
        if mask & HAS_SOURCE_PICO:
            p += 2
        if mask & HAS_SERVER_TS:
            server.append(filetime_us(unpack_i64(buf, p)[0]))
            p += 8
        else:
            server.append(None)
        if mask & HAS_SERVER_PICO:
            p += 2
        handles.append(handle)
        values.append(value)
    return p


class FastMessage:
    """What `_publish_loop` reads of the NotificationMessage: NotificationData (only its truth:
    is there something to acknowledge) and SequenceNumber."""

    __slots__ = ("NotificationData", "SequenceNumber")

    def __init__(self, columns: PublishColumns):
        self.SequenceNumber = columns.sequence_number
        self.NotificationData = [columns] if columns.notification_count else []


class FastPublishResult:
    """The `Parameters` of a decoded PublishResponse, handed to the subscription's callback."""

    __slots__ = ("MoreNotifications", "NotificationMessage", "SubscriptionId", "columns")

    def __init__(self, columns: PublishColumns):
        self.SubscriptionId = columns.subscription_id
        self.MoreNotifications = columns.more_notifications
        self.NotificationMessage = FastMessage(columns)
        self.columns = columns


class FastPublishResponse:
    """Stands in for asyncua's PublishResponse in `UaSession._publish_loop`."""

    __slots__ = ("Parameters",)

    def __init__(self, columns: PublishColumns):
        self.Parameters = FastPublishResult(columns)
