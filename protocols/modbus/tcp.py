"""A lean asyncio Modbus/TCP client for the poller's read requests (function codes 1-4).

Why our own code and not pymodbus here (issue 12): the read path is the hot loop, 800 requests
of 125 registers a second at 100,000 values/s, and pymodbus' generic per-request machinery
(framer, transaction manager, PDU objects, futures with wait_for, debug logging) and its
per-register decoding were most of the source's CPU. This client does only what a read needs:
it builds the 12-byte request once per ReadRequest, sends it, and decodes the answer's registers
with ONE `struct.unpack_from` (bits with one pass over the bytes). pymodbus stays for RTU, for
writes, and as the reference the tests compare this client against.

Behaviour the poller relies on, as pymodbus gave it:
- one request in flight per connection (devices often serve one at a time; no pipelining);
- a per-request timeout; on a timeout the same request (same transaction id) is sent again,
  `retries` times, so a request waits at most (retries + 1) x timeout; then it fails `timeout`
  and the link is closed (an answer that comes late must not be taken for the next request's);
- an answer to a request that was sent again may come twice: the second is dropped (its
  transaction id is remembered), anything else unexpected fails the request.

Errors are `RequestFailed(reason, detail, link=)` with the poller's reasons: `exception_<code>`
(the device answered fc | 0x80), `bad_response` (wrong protocol id, transaction id, unit id or
function code, an inconsistent frame), `bad_length` (not the count asked for), `timeout`,
`comm_lost` (the connection dropped or is not open).
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from itertools import chain

from engine.tags import COMM_LOST
from protocols.connect_errors import os_error_reason
from protocols.modbus.planner import ReadRequest

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit + PDU), unit id
REQUEST = struct.Struct(">HHHBBHH")  # MBAP + function code, address, count
MAX_FRAME_LENGTH = 254  # the MBAP length field: unit id + a PDU of at most 253 bytes
# One byte -> its 8 bits, least significant first (the Modbus order of coils in a byte).
BYTE_BITS = tuple(tuple(bool(byte >> i & 1) for i in range(8)) for byte in range(256))
_REGISTERS: dict[int, struct.Struct] = {}


class RequestFailed(Exception):
    def __init__(self, reason: str, detail: str, *, link: bool = False):
        super().__init__(detail)
        self.reason, self.link = reason, link  # link: the connection is no longer usable


def registers_struct(count: int) -> struct.Struct:
    unpack = _REGISTERS.get(count)
    if unpack is None:
        unpack = _REGISTERS[count] = struct.Struct(f">{count}H")
    return unpack


def where(request: ReadRequest) -> str:
    return f"{request.table} {request.address}+{request.count}"


class Link(asyncio.Protocol):
    """One TCP connection of a client: its events reach the client only while it is the
    client's current link (a closed connection's late callbacks change nothing)."""

    def __init__(self, client: ModbusTcpClient):
        self.client = client

    def data_received(self, data: bytes) -> None:
        if self.client.link is self:
            self.client.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.link is self:
            self.client.connection_lost(exc)


class ModbusTcpClient:
    """One connection to one device; `read(request)` -> the registers (ints) or bits (bools)."""

    def __init__(self, host: str, port: int, timeout: float, retries: int = 0):
        self.host, self.port, self.timeout, self.retries = host, port, timeout, retries
        self.timeout_ms = round(timeout * 1000)
        self.error: BaseException | None = None  # why the last connect() failed
        self.transport: asyncio.Transport | None = None
        self.link: Link | None = None
        self._buffer = b""  # the start of an answer whose rest is still on its way
        self._tid = 0
        self._waiter: asyncio.Future | None = None
        self._expect: tuple[int, int, int] = (0, 0, 0)  # transaction id, unit id, function code
        self._late: deque[int] = deque(maxlen=8)  # ids of requests sent again: a 2nd answer may come
        self._frames: dict[tuple, bytearray] = {}  # the request's bytes (a 4-tuple hashes faster)

    # -- what the poller uses ----------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.transport is not None

    async def connect(self) -> bool:
        """Open the connection; False (the reason in `error`) when it cannot be opened."""
        self.close()
        self.error = None
        link = self.link = Link(self)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: link, self.host, self.port), self.timeout
            )
        except (TimeoutError, OSError) as exc:
            self.error = exc
            self.link = None
            return False
        if self.link is not link or transport.is_closing():  # closed meanwhile
            transport.abort()
            return False
        self.transport = transport
        return True

    def close(self) -> None:
        """Drop the connection (at once: a late answer dies with it); a request in flight fails."""
        self._drop()
        self._fail(RequestFailed(COMM_LOST, "connection closed", link=True))

    def describe_error(self) -> str | None:
        """Why the last connect() failed, as connect_errors words it (None: it did not fail)."""
        return os_error_reason(self.error, f"{self.timeout_ms} ms") if self.error else None

    async def read(self, request: ReadRequest) -> list:
        """The registers (or bits) of one request; RequestFailed says why not."""
        transport = self.transport
        if transport is None:
            raise RequestFailed(COMM_LOST, f"{where(request)}: not connected", link=True)
        if self._waiter is not None:  # a caller's bug: answers would be matched to the wrong request
            raise RuntimeError(f"{where(request)}: a request is already in flight on this connection")
        key = (request.table, request.unit_id, request.address, request.count)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = bytearray(
                REQUEST.pack(0, 0, 6, request.unit_id, request.function_code, request.address, request.count)
            )
        self._tid = tid = self._tid % 65535 + 1  # 1..65535 (0 means "any" to pymodbus' framer)
        frame[0], frame[1] = tid >> 8, tid & 0xFF
        self._expect = (tid, request.unit_id, request.function_code)
        loop = asyncio.get_running_loop()
        try:
            for attempt in range(self.retries + 1):
                if attempt:  # the same request again, as pymodbus retries: its answer may come twice
                    self._late.append(tid)
                waiter = self._waiter = loop.create_future()
                timer = loop.call_later(self.timeout, _time_out, waiter)
                transport.write(bytes(frame))
                try:
                    data, start = await waiter
                    break
                except TimeoutError:
                    continue
                finally:
                    timer.cancel()
                    self._waiter = None
            else:
                self.close()
                raise RequestFailed(
                    "timeout", f"{where(request)}: no answer within {self.timeout_ms} ms", link=True
                )
        except RequestFailed as failure:
            if failure.reason == "timeout":
                raise
            raise RequestFailed(failure.reason, f"{where(request)}: {failure}", link=failure.link) from None
        return self._decode(request, data, start)

    # -- the answer ---------------------------------------------------------------------------
    def _decode(self, request: ReadRequest, data: bytes, start: int) -> list:
        # start: where the frame's MBAP header is in data; the frame is complete and its
        # transaction id, unit id and function code are the request's (_frame checked them).
        length = data[start + 4] << 8 | data[start + 5]
        function = data[start + 7]
        if function & 0x80:
            code = data[start + 8] if length == 3 else 0
            if length != 3:
                self._drop()
                raise RequestFailed(
                    "bad_response", f"{where(request)}: an exception answer of {length} bytes", link=True
                )
            raise RequestFailed(f"exception_{code}", f"{where(request)}: exception code {code}")
        size = data[start + 8] if length >= 3 else -1
        if size != length - 3:  # the byte count disagrees with the frame's length
            self._drop()
            raise RequestFailed(
                "bad_response",
                f"{where(request)}: a byte count of {size} in a frame of {length - 3} data bytes",
                link=True,
            )
        offset = start + 9
        if function <= 2:  # coils, discrete inputs: 8 a byte, least significant first
            if size != (request.count + 7) >> 3:
                raise RequestFailed("bad_length", f"{where(request)}: {size * 8} values in the answer")
            bits = list(chain.from_iterable(map(BYTE_BITS.__getitem__, data[offset : offset + size])))
            del bits[request.count :]
            return bits
        if size != 2 * request.count:
            raise RequestFailed("bad_length", f"{where(request)}: {size // 2} values in the answer")
        return list(registers_struct(request.count).unpack_from(data, offset))

    def _fail(self, failure: RequestFailed) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(failure)

    def _drop(self) -> None:
        transport, self.transport, self.link = self.transport, None, None
        self._buffer = b""
        self._tid = 0
        self._late.clear()
        if transport is not None:
            transport.abort()

    # -- the connection's events (from its Link) -------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = self.link = None
        self._buffer = b""
        why = os_error_reason(exc, f"{self.timeout_ms} ms") if exc else None
        self._fail(RequestFailed(COMM_LOST, f"connection lost{f': {why}' if why else ''}", link=True))

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        start, end = 0, len(data)
        while end - start >= 8:  # MBAP (7) + function code
            tid, protocol, length, unit = MBAP.unpack_from(data, start)
            if protocol != 0 or not 2 <= length <= MAX_FRAME_LENGTH:
                what = f"protocol id {protocol}" if protocol else f"a frame length of {length}"
                self._broken(f"{what} in the answer (allowed: protocol id 0, length 2-254)")
                return
            stop = start + 6 + length
            if stop > end:
                break  # the rest of this frame is still on its way
            self._frame(data, start, tid, unit)
            if self.transport is None:  # the frame broke the link
                return
            start = stop
        self._buffer = data[start:] if start < end else b""

    def _frame(self, data: bytes, start: int, tid: int, unit: int) -> None:
        waiter = self._waiter
        expect_tid, expect_unit, expect_function = self._expect
        awaited = waiter is not None and not waiter.done()
        if tid in self._late and not (awaited and tid == expect_tid):
            return  # a second (third...) answer to a request that was sent again
        if not awaited:
            self._broken(f"an answer (transaction {tid}) to no request")
            return
        function = data[start + 7]
        if tid != expect_tid:
            self._broken(f"an answer to transaction {tid}, expected {expect_tid}")
        elif unit != expect_unit and expect_unit != 0:  # unit 0: any unit answers (as pymodbus)
            self._broken(f"an answer from unit {unit}, expected {expect_unit}")
        elif function & 0x7F != expect_function:
            self._broken(f"an answer with function code {function}, expected {expect_function}")
        else:
            waiter.set_result((data, start))

    def _broken(self, what: str) -> None:
        """An answer that cannot be this request's: fail it and drop the link (what follows on
        the stream cannot be trusted)."""
        self._fail(RequestFailed("bad_response", what, link=True))
        self._drop()


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
