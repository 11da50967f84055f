"""Our lean Modbus/TCP client (protocols/modbus/tcp.py) against real servers: the simulator
(pymodbus' server), pyModbusTCP's server (a peer nobody here wrote) and scripted socket servers
that answer exactly the bytes a test wants (late, split, coalesced, wrong, or not at all).

The answers a scripted server sends are built here with `struct` from the Modbus/TCP
specification (MBAP: transaction id, protocol id 0, length, unit id; PDU: function code, byte
count, data), not with the client's own code. pymodbus' client reading the same servers is the
reference for the values."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyModbusTCP.server import DataBank

from protocols.modbus.config import ModbusSourceConfig
from protocols.modbus.connector import make_client, read_block
from protocols.modbus.planner import ReadRequest, plan_requests
from protocols.modbus.simulator import ModbusSimulator
from protocols.modbus.tcp import ModbusTcpClient, RequestFailed
from tests.net import closed_port, free_port
from tests.protocols.modbus.test_pymodbustcp_peer import Peer


@pytest.fixture(params=["asyncio", "uvloop"])
def each_loop(request, monkeypatch):
    """The test's `asyncio.run` on each loop a source may poll on (protocols/event_loop.py: uvloop
    under load): the client's framing, timeouts and closes must not depend on the loop."""
    if request.param == "uvloop":
        import uvloop

        monkeypatch.setattr(asyncio, "run", uvloop.run)
    return request.param


ON_BOTH_LOOPS = pytest.mark.usefixtures("each_loop")


def request(table: str, address: int, count: int, unit: int = 1) -> ReadRequest:
    return ReadRequest(table, unit, address, count, tuple(range(count)))


def adu(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def registers_pdu(function: int, words: list[int]) -> bytes:
    return struct.pack(f">BB{len(words)}H", function, 2 * len(words), *words)


def bits_pdu(function: int, bits: list[bool]) -> bytes:
    data = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            data[i // 8] |= 1 << (i % 8)
    return bytes([function, len(data)]) + bytes(data)


class Scripted:
    """A real TCP server on the test's loop. Every 12-byte request it reads is recorded as
    (transaction id, unit, function, address, count) and handed to `answer`, which returns the
    bytes to write at once, None to stay silent, or (bytes, "close") to write them and close."""

    def __init__(self, answer: Callable[[tuple, int], bytes | tuple | None]):
        self.answer = answer
        self.requests: list[tuple[int, int, int, int, int]] = []
        self.raw: list[bytes] = []
        self.changed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await reader.readexactly(12)
                tid, _protocol, _length, unit, function, address, count = struct.unpack(">HHHBBHH", raw)
                self.raw.append(raw)
                self.requests.append((tid, unit, function, address, count))
                self.changed.set()
                reply = self.answer(self.requests[-1], len(self.requests))
                if isinstance(reply, tuple):  # (the bytes to write, then "close")
                    writer.write(reply[0])
                    await writer.drain()
                    writer.close()
                    return
                if reply:
                    writer.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))


def silent(_request, _n) -> None:
    return None


def answering(words: list[int]) -> Callable:
    """Answers every holding/input request with `words`, as a device would."""

    def answer(req, _n):
        tid, unit, function, _address, count = req
        return adu(tid, unit, registers_pdu(function, words[:count]))

    return answer


async def failure_of(client: ModbusTcpClient, req: ReadRequest) -> RequestFailed:
    with pytest.raises(RequestFailed) as info:
        await client.read(req)
    return info.value


# -- the same values as pymodbus reads from the same servers ------------------------------------
async def read_with_pymodbus(port: int, req: ReadRequest) -> list:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        reader = {
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
        }[req.table]
        response = await reader(req.address, count=req.count, device_id=req.unit_id)
        assert not response.isError(), response
        return list(response.bits[: req.count] if req.table in ("coil", "discrete") else response.registers)
    finally:
        client.close()


@ON_BOTH_LOOPS
def test_the_simulator_every_planned_request_reads_as_pymodbus_reads_it():
    with ModbusSimulator(meters=2, tags_per_meter=314, frozen_at=1000.0) as sim:
        config = ModbusSourceConfig.model_validate(sim.connector_config())

        async def main():
            compared = 0
            for device in config.devices:
                client = make_client(device)
                assert isinstance(client, ModbusTcpClient) and await client.connect()
                try:
                    for req in plan_requests(device):
                        ours = await read_block(client, device, req)
                        assert ours == await read_with_pymodbus(sim.port, req), req
                        assert len(ours) == req.count
                        compared += 1
                finally:
                    client.close()
            return compared

        assert asyncio.run(main()) == 14  # 7 requests a meter, a 125-register block among them


@ON_BOTH_LOOPS
def test_pymodbustcp_server_large_blocks_of_every_table_read_as_written():
    """pyModbusTCP's server, a third-party peer: random 125-register blocks and 2000-bit blocks
    (the protocol's largest), against what was written and against pymodbus' reading."""
    rng = random.Random(12)
    bank = DataBank()
    holding = [rng.randrange(65536) for _ in range(125)]
    inputs = [rng.randrange(65536) for _ in range(125)]
    coils = [rng.random() < 0.5 for _ in range(2000)]
    discrete = [rng.random() < 0.5 for _ in range(1999)]  # not a multiple of 8
    bank.set_holding_registers(1000, holding)
    bank.set_input_registers(20000, inputs)
    bank.set_coils(3, coils)
    bank.set_discrete_inputs(60000, discrete)
    server = Peer(free_port(), data_bank=bank)
    server.start()
    cases = [
        (request("holding", 1000, 125), holding),
        (request("input", 20000, 125), inputs),
        (request("coil", 3, 2000), coils),
        (request("discrete", 60000, 1999), discrete),
        (request("holding", 1000, 1), holding[:1]),
        (request("coil", 3, 9), coils[:9]),
    ]

    async def main():
        client = ModbusTcpClient("127.0.0.1", server.port, timeout=5)
        assert await client.connect()
        try:
            for req, written in cases:
                ours = await client.read(req)
                assert ours == written, req
                assert ours == await read_with_pymodbus(server.port, req), req
            failure = await failure_of(client, request("holding", 65500, 125))  # past the table
            assert (failure.reason, str(failure), failure.link) == (
                "exception_2",
                "holding 65500+125: exception code 2",
                False,
            )
            assert client.connected and await client.read(request("holding", 1000, 3)) == holding[:3]
        finally:
            client.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


# -- framing: split answers, coalesced answers, a request sent again ----------------------------
@ON_BOTH_LOOPS
def test_an_answer_split_at_every_byte_boundary_is_reassembled():
    words = [(7919 * i) % 65536 for i in range(125)]
    bits = [i % 3 == 0 for i in range(19)]

    async def main():
        async with Scripted(silent) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=10)
            assert await client.connect()
            for req, pdu, expected in (
                (request("holding", 0, 125), registers_pdu(3, words), words),
                (request("input", 7, 2), registers_pdu(4, words[:2]), words[:2]),
                (request("coil", 0, 19), bits_pdu(1, bits), bits),
                (request("discrete", 0, 19, unit=7), bits_pdu(2, bits), bits),
            ):
                for cut in range(1, 7 + len(pdu)):  # every byte boundary of the frame
                    task = asyncio.create_task(client.read(req))
                    await server.wait_requests(len(server.requests) + 1)
                    tid = server.requests[-1][0]
                    frame = adu(tid, req.unit_id, pdu)
                    client.link.data_received(frame[:cut])  # what the loop hands the protocol
                    await asyncio.sleep(0)
                    assert not task.done(), cut  # half an answer is no answer
                    client.link.data_received(frame[cut:])
                    assert await task == expected, (req, cut)
            client.close()

    asyncio.run(main())


@ON_BOTH_LOOPS
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.integers(0, 65535), min_size=1, max_size=125),
    late=st.integers(0, 2),
    cuts=st.lists(st.integers(1, 600), max_size=6),
)
def test_split_and_coalesced_answers_after_a_request_sent_again(words, late, cuts):
    """A request that timed out once is sent again (same transaction id, as pymodbus retries);
    its answer comes; the duplicate answers of the other sending come later, coalesced with the
    next request's answer and cut anywhere: the duplicates are dropped, the answer is taken."""
    count = len(words)

    async def main():
        async with Scripted(silent) as server:
            # sent every 50 ms until an answer comes (at most 11 times: room for a loaded machine)
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=0.05, retries=10)
            assert await client.connect()
            first = asyncio.create_task(client.read(request("holding", 0, 1)))
            await server.wait_requests(2)  # sent, no answer, sent again: the same bytes
            assert server.raw[0] == server.raw[1]
            sent = len(server.requests)
            tid = server.requests[0][0]
            client.link.data_received(adu(tid, 1, registers_pdu(3, [5])))
            assert await first == [5]
            second = asyncio.create_task(client.read(request("input", 0, count)))
            await server.wait_requests(sent + 1)  # (a request sent again meanwhile is in `sent`)
            assert server.requests[-1][2:] == (4, 0, count)
            stream = adu(tid, 1, registers_pdu(3, [5])) * late + adu(
                server.requests[-1][0], 1, registers_pdu(4, words)
            )
            points = sorted({c for c in cuts if c < len(stream)})
            for start, end in zip([0, *points], [*points, len(stream)], strict=True):
                client.link.data_received(stream[start:end])
            assert await second == words
            assert client.connected
            client.close()

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_a_late_answer_and_its_duplicate_coalesced_over_tcp():
    """Over the wire: the device misses the first sending of request 1 and answers the next; its
    answer to the other sending comes in one segment with request 2's answer."""
    words = list(range(100, 110))
    sendings: dict[int, int] = {}

    def answer(req, _n):
        tid, unit, function, _address, count = req
        sendings[tid] = sendings.get(tid, 0) + 1
        if tid == 1 and sendings[tid] == 1:
            return None  # the first sending is lost
        if tid == 2 and sendings[tid] == 1:  # the duplicate of request 1 and request 2's answer
            return adu(1, unit, registers_pdu(3, words[:1])) + adu(
                tid, unit, registers_pdu(function, words[:count])
            )
        return adu(tid, unit, registers_pdu(function, words[:count]))

    async def main():
        async with Scripted(answer) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=0.3, retries=5)
            assert await client.connect()
            assert await client.read(request("holding", 0, 1)) == words[:1]
            assert await client.read(request("input", 0, 10)) == words
            assert await client.read(request("input", 0, 4)) == words[:4]
            assert client.connected
            assert sendings[1] >= 2 and set(sendings) == {1, 2, 3}
            client.close()

    asyncio.run(main())


# -- failures, worded as the poller reports them ----------------------------------------------
@ON_BOTH_LOOPS
@pytest.mark.parametrize("code", [1, 2, 3, 4, 6, 11])
def test_exception_answers_fail_only_that_request(code):
    def answer(req, _n):
        tid, unit, function, _address, count = req
        if function == 3:
            return adu(tid, unit, bytes([function | 0x80, code]))
        return adu(tid, unit, bits_pdu(function, [True] * count))

    async def main():
        async with Scripted(answer) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=5)
            assert await client.connect()
            failure = await failure_of(client, request("holding", 40, 2))
            assert (failure.reason, str(failure), failure.link) == (
                f"exception_{code}",
                f"holding 40+2: exception code {code}",
                False,
            )
            assert client.connected and await client.read(request("coil", 0, 3)) == [True] * 3
            client.close()

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_no_answer_is_a_timeout_after_the_retries_and_the_link_is_closed():
    async def main():
        async with Scripted(silent) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=0.2, retries=2)
            assert await client.connect()
            started = time.monotonic()
            failure = await failure_of(client, request("holding", 0, 1))
            waited = time.monotonic() - started
            assert (failure.reason, str(failure), failure.link) == (
                "timeout",
                "holding 0+1: no answer within 200 ms",
                True,
            )
            assert waited >= 3 * 0.2 and not client.connected
            await server.wait_requests(3)
            assert len(set(server.raw)) == 1 and len(server.raw) == 3  # one request, sent 3 times
            failure = await failure_of(client, request("holding", 0, 1))
            assert (failure.reason, str(failure)) == ("comm_lost", "holding 0+1: not connected")

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_the_poller_reports_a_silent_device_as_before():
    """read_block with a device's settings: the poller's wording (`no answer within N ms`)."""

    async def main():
        async with Scripted(silent) as server:
            device = ModbusSourceConfig.model_validate(
                {
                    "devices": [
                        {
                            "name": "m",
                            "port": server.port,
                            "timeout_ms": 150,
                            "tags": [{"name": "p", "address": 3}],
                        }
                    ]
                }
            ).devices[0]
            client = make_client(device)
            assert await client.connect()
            with pytest.raises(RequestFailed) as info:
                await read_block(client, device, plan_requests(device)[0])
            assert (info.value.reason, str(info.value), info.value.link) == (
                "timeout",
                "holding 3+1: no answer within 150 ms",
                True,
            )

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_a_server_that_closes_mid_answer_is_comm_lost():
    def answer(req, _n):
        tid, unit, function, _address, count = req
        return adu(tid, unit, registers_pdu(function, [1] * count))[:20], "close"

    async def main():
        async with Scripted(answer) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=5)
            assert await client.connect()
            failure = await failure_of(client, request("holding", 0, 10))
            assert (failure.reason, failure.link) == ("comm_lost", True)
            assert str(failure).startswith("holding 0+10: connection lost"), failure
            assert not client.connected

    asyncio.run(main())


@ON_BOTH_LOOPS
@pytest.mark.parametrize(
    ("reply", "reason", "detail"),
    [
        (
            lambda tid: adu(tid + 1, 1, registers_pdu(3, [1, 2])),
            "bad_response",
            "an answer to transaction 2, expected 1",
        ),
        (
            lambda tid: adu(tid, 9, registers_pdu(3, [1, 2])),
            "bad_response",
            "an answer from unit 9, expected 1",
        ),
        (
            lambda tid: adu(tid, 1, registers_pdu(4, [1, 2])),
            "bad_response",
            "an answer with function code 4, expected 3",
        ),
        (
            lambda tid: adu(tid, 1, registers_pdu(3, [1, 2]), protocol=7),
            "bad_response",
            "protocol id 7 in the answer (allowed: protocol id 0, length 2-254)",
        ),
        (
            lambda tid: adu(tid, 1, bytes([3, 6, 0, 1, 0, 2])),  # says 6 bytes, carries 4
            "bad_response",
            "a byte count of 6 in a frame of 4 data bytes",
        ),
        (lambda tid: adu(tid, 1, registers_pdu(3, [1])), "bad_length", "1 values in the answer"),
        (lambda tid: adu(tid, 1, registers_pdu(3, [1, 2, 3])), "bad_length", "3 values in the answer"),
    ],
)
def test_a_wrong_answer_is_named(reply, reason, detail):
    async def main():
        async with Scripted(lambda req, _n: reply(req[0])) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=5)
            assert await client.connect()
            failure = await failure_of(client, request("holding", 0, 2))
            assert (failure.reason, str(failure)) == (reason, f"holding 0+2: {detail}")
            # a frame that cannot be the request's answer breaks the link; a consistent frame
            # with the wrong count does not (as the poller had it with pymodbus)
            assert failure.link is (reason == "bad_response") and client.connected is not failure.link
            client.close()

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_a_short_bit_answer_is_bad_length():
    async def main():
        async with Scripted(lambda req, _n: adu(req[0], 1, bits_pdu(1, [True] * 8))) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=5)
            assert await client.connect()
            failure = await failure_of(client, request("coil", 0, 9))
            assert (failure.reason, str(failure), failure.link) == (
                "bad_length",
                "coil 0+9: 8 values in the answer",
                False,
            )
            client.close()

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_a_refused_connection_names_why():
    port = closed_port()

    async def main():
        client = ModbusTcpClient("127.0.0.1", port, timeout=2)
        assert await client.connect() is False and not client.connected
        assert client.describe_error() == "connection refused"
        failure = await failure_of(client, request("holding", 0, 1))
        assert (failure.reason, failure.link) == ("comm_lost", True)

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_rtu_devices_keep_pymodbus():
    from pymodbus.client import AsyncModbusSerialClient

    device = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "m",
                    "transport": "rtu",
                    "serial_port": "/dev/null",
                    "tags": [{"name": "p", "address": 0}],
                }
            ]
        }
    ).devices[0]

    async def main():
        client = make_client(device)
        assert isinstance(client, AsyncModbusSerialClient)
        client.close()

    asyncio.run(main())


@ON_BOTH_LOOPS
def test_one_request_in_flight_per_connection():
    async def main():
        async with Scripted(silent) as server:
            client = ModbusTcpClient("127.0.0.1", server.port, timeout=5)
            assert await client.connect()
            first = asyncio.create_task(client.read(request("holding", 0, 1)))
            await server.wait_requests(1)
            with pytest.raises(RuntimeError, match="holding 5\\+1: a request is already in flight"):
                await client.read(request("holding", 5, 1))
            client.link.data_received(adu(server.requests[0][0], 1, registers_pdu(3, [77])))
            assert await first == [77] and len(server.requests) == 1  # nothing else was sent
            client.close()

    asyncio.run(main())


def test_the_devices_first_rounds_are_spread_over_the_interval():
    """4 devices at 800 ms: device i's first round starts no earlier than i/4 of the interval
    after the source's start (200 ms apart), so their batches do not all come at once."""
    import polars as pl

    from engine.tags import utc_now
    from tests.protocols.modbus.test_connector import make_source, run

    with ModbusSimulator(meters=4, frozen_at=1000.0) as sim:
        source = make_source(sim.connector_config(poll_interval_ms=800))
        started = utc_now()
        out = run(source, 20, until=lambda o: o.frame()["tag"].str.split(".").list.first().n_unique() == 4)
    frame = out.frame().with_columns(pl.col("tag").str.split(".").list.first().alias("device"))
    first = frame.group_by("device").agg(pl.col("timestamp").min()).sort("device")
    assert first["device"].to_list() == ["meter1", "meter2", "meter3", "meter4"]
    for i, stamp in enumerate(first["timestamp"].to_list()):
        assert (stamp - started).total_seconds() >= i * 0.2, (i, stamp, started)
    assert set(frame["quality"]) == {"good"}


@ON_BOTH_LOOPS
def test_each_requests_rows_are_stamped_when_its_answer_came():
    """A device that takes 60 ms to answer each of a round's 3 requests: each request's rows carry
    the moment its own answer came: after the server wrote it, before the next request reached the
    server (the client sends it once the answer is in), not the round's start."""
    from engine.tags import as_frame
    from tests.protocols.modbus.test_connector import make_source

    arrived: list[int] = []  # epoch µs: a request reached the server
    written: list[int] = []  # epoch µs: the server wrote its answer

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await reader.readexactly(12)
                arrived.append(time.time_ns() // 1000)
                tid, _p, _l, unit, function, address, count = struct.unpack(">HHHBBHH", raw)
                await asyncio.sleep(0.06)
                written.append(time.time_ns() // 1000)
                writer.write(adu(tid, unit, registers_pdu(function, [address + k for k in range(count)])))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tags = [{"name": f"t{i}", "address": 1000 * i} for i in range(3)]  # 3 requests: too far apart
        source = make_source(
            {"devices": [{"name": "m", "port": port, "poll_interval_ms": 60_000, "tags": tags}]}
        )
        batches: list = []
        source.start(batches.append)
        try:
            deadline = time.monotonic() + 20
            while not batches and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            await asyncio.to_thread(source.stop)
            server.close()
        return as_frame(batches[0])

    frame = asyncio.run(main())
    assert frame["value"].to_list() == [0.0, 1000.0, 2000.0]
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    assert written[0] <= stamps[0] <= arrived[1]
    assert written[1] <= stamps[1] <= arrived[2]
    assert written[2] <= stamps[2] <= frame["received_at"].dt.epoch("us")[0]
    assert stamps[0] - arrived[0] >= 50_000  # not the round's start: the first answer took 60 ms
