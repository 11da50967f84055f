"""Our Modbus source against a server nobody here wrote: pyModbusTCP's `ModbusServer` (issue 9,
D17), and garbage into the Modbus path (A2/A4): a bad block gives bad records for its tags only,
the others flow.

The expected register words are built here with `struct` from the Modbus conventions, not with
our codec, so an encoder and decoder that are wrong the same way cannot agree with each other."""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import threading
import time

import polars as pl
import pytest
from pyModbusTCP.server import EXP_DATA_ADDRESS, DataBank, DataHandler, ModbusServer

from engine.context import RunContext
from engine.tags import as_frame
from protocols.modbus.config import ModbusSourceConfig
from protocols.modbus.connector import ModbusSource
from tests.net import free_port


class Peer(ModbusServer):
    """pyModbusTCP's server; `stop()` also drops the open sessions, as a device that reboots
    does (pyModbusTCP's own stop() closes the listening socket only)."""

    def __init__(self, port: int, **kwargs):
        self.sessions: set[socket.socket] = set()
        peer = self

        class Service(ModbusServer.ModbusService):
            def setup(self):
                super().setup()
                peer.sessions.add(self.request)

        self.ModbusService = Service  # type: ignore[misc]
        super().__init__(host="127.0.0.1", port=port, no_block=True, **kwargs)

    def stop(self) -> None:
        super().stop()
        for session in list(self.sessions):
            with contextlib.suppress(OSError):
                session.shutdown(socket.SHUT_RDWR)
            session.close()
        self.sessions.clear()


def words(fmt: str, value, *, word_order: str = "big", byte_order: str = "big") -> list[int]:
    """The registers a device holds for `value` packed big-endian as `fmt`, in address order."""
    regs = list(struct.unpack(f">{struct.calcsize(fmt) // 2}H", struct.pack(f">{fmt}", value)))
    if word_order == "little":
        regs.reverse()
    if byte_order == "little":
        regs = [((w & 0xFF) << 8) | (w >> 8) for w in regs]
    return regs


# (tag config, words written at its address, expected value)
HOLDING = [
    ({"name": "i16", "address": 0, "type": "int16"}, words("h", -1234), -1234.0),
    ({"name": "u16", "address": 1, "type": "uint16", "scale": 0.1}, words("H", 65000), 6500.0),
    ({"name": "i32", "address": 2, "type": "int32"}, words("i", -7_000_000), -7_000_000.0),
    (
        {"name": "i32_lw", "address": 4, "type": "int32", "word_order": "little"},
        words("i", 123_456_789, word_order="little"),
        123_456_789.0,
    ),
    ({"name": "u32", "address": 6, "type": "uint32"}, words("I", 4_000_000_000), 4_000_000_000.0),
    ({"name": "f32", "address": 8, "type": "float32"}, words("f", 12.5), 12.5),
    (
        {"name": "f32_lw", "address": 10, "type": "float32", "word_order": "little"},
        words("f", -3.25, word_order="little"),
        -3.25,
    ),
    (
        {"name": "f32_swap", "address": 12, "type": "float32", "byte_order": "little"},
        words("f", 99.75, byte_order="little"),
        99.75,
    ),
    ({"name": "f64", "address": 14, "type": "float64"}, words("d", math.pi), math.pi),
    (
        {"name": "f64_lw", "address": 18, "type": "float64", "word_order": "little"},
        words("d", -1e10, word_order="little"),
        -1e10,
    ),
    ({"name": "bit3", "address": 22, "type": "bit", "bit": 3}, [0b1000], True),
    ({"name": "bit4", "address": 22, "type": "bit", "bit": 4}, [0b1000], False),
    (
        {"name": "label", "address": 23, "type": "string", "length": 3},
        list(struct.unpack(">3H", b"WTG-7\x00")),
        "WTG-7",
    ),
]
INPUT = [
    ({"name": "in_f32", "address": 100, "type": "float32", "table": "input"}, words("f", 0.5), 0.5),
    ({"name": "in_u16", "address": 102, "type": "uint16", "table": "input"}, words("H", 42), 42.0),
]
COILS = [({"name": "coil5", "address": 5, "type": "bool", "table": "coil"}, True)]
DISCRETE = [({"name": "di7", "address": 7, "type": "bool", "table": "discrete"}, True)]


def load(bank: DataBank) -> None:
    for tag, regs, _ in HOLDING:
        bank.set_holding_registers(tag["address"], regs)
    for tag, regs, _ in INPUT:
        bank.set_input_registers(tag["address"], regs)
    for tag, value in COILS:
        bank.set_coils(tag["address"], [value])
    for tag, value in DISCRETE:
        bank.set_discrete_inputs(tag["address"], [value])


def config(port: int, tags: list[dict], **device) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "dev",
                    "host": "127.0.0.1",
                    "port": port,
                    "poll_interval_ms": 100,
                    "timeout_ms": 500,
                    "backoff_max_ms": 400,
                    "tags": tags,
                    **device,
                }
            ]
        }
    )


class Running:
    """A ModbusSource running on its own thread, collecting what it emits and its states."""

    def __init__(self, cfg: ModbusSourceConfig):
        self.source = ModbusSource(cfg, RunContext(), "plc")
        self.frames: list[pl.DataFrame] = []
        self.states: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.source.on_state = lambda _n, state, detail: self.states.append((state, detail))

    def emit(self, frame: pl.DataFrame) -> None:
        with self.lock:
            self.frames.append(as_frame(frame))  # a small round is a TagBatch

    def frame(self) -> pl.DataFrame:
        with self.lock:
            return pl.concat(self.frames) if self.frames else pl.DataFrame()

    def wait(self, check, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frame()
            got = check(frame) if frame.height else None
            if got is not None and got is not False:
                return got
            assert time.monotonic() < deadline, f"timed out; states {self.states[-5:]}"
            time.sleep(0.02)

    def __enter__(self) -> Running:
        self.source.start(self.emit)
        return self

    def __exit__(self, *exc) -> None:
        self.source.stop()


def last_round(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("received_at") == pl.col("received_at").max()) if frame.height else frame


@pytest.fixture
def peer():
    server = Peer(free_port())
    load(server.data_bank)
    server.start()
    yield server
    server.stop()


def test_every_table_type_and_word_order_from_pymodbustcp(peer):
    tags = [t for t, _, _ in HOLDING + INPUT] + [t for t, _ in COILS + DISCRETE]
    with Running(config(peer.port, tags)) as run:
        frame = run.wait(lambda f: last_round(f) if f.height >= len(tags) else None)
    got = {row["tag"]: row for row in frame.iter_rows(named=True)}
    assert set(frame["quality"]) == {"good"}, frame
    for tag, _, expected in HOLDING + INPUT:
        row = got[f"dev.{tag['name']}"]
        if isinstance(expected, str):
            assert row["value_text"] == expected
        elif isinstance(expected, bool):
            assert row["value"] == float(expected)
        else:
            assert row["value"] == pytest.approx(expected, rel=1e-6), tag
    for tag, expected in COILS + DISCRETE:
        assert got[f"dev.{tag['name']}"]["value"] == float(expected)


def test_survives_the_server_stopping_and_restarting(peer):
    port = peer.port
    tags = [HOLDING[5][0], HOLDING[0][0]]  # f32 and i16
    with Running(config(port, tags)) as run:
        run.wait(lambda f: f.filter(pl.col("quality") == "good").height >= 2)
        peer.stop()
        gap = run.wait(lambda f: f.filter(pl.col("reason") == "comm_lost").height >= 2 and f)
        bad = gap.filter(pl.col("reason") == "comm_lost")
        assert set(bad["quality"]) == {"bad"} and bad["value"].null_count() == bad.height
        assert set(bad["tag"]) == {"dev.f32", "dev.i16"}  # the gap names every tag of the device
        run.wait(lambda _f: run.source.state == "lost")
        assert run.source.state_detail.startswith(f"modbus://127.0.0.1:{port}: ")
        lost_at = gap.height

        again = Peer(port)
        load(again.data_bank)
        again.start()
        try:
            after = run.wait(
                lambda f: (tail := f.slice(lost_at)).filter(pl.col("quality") == "good").height >= 2 and tail,
                timeout=15,
            )
            assert run.source.state == "connected"
        finally:
            again.stop()
    good = after.filter(pl.col("quality") == "good")
    assert good.filter(pl.col("tag") == "dev.f32")["value"][0] == 12.5
    assert run.source.counters["links_lost"] >= 1 and run.source.counters["connects"] >= 2
    states = [s for s, _ in run.states]
    assert states.index("lost") < len(states) - 1 - states[::-1].index("connected")  # back up after


class Garbage(DataHandler):
    """A peer answering garbage: NaN and infinity in float registers, an exception for the input
    registers, and the right data elsewhere."""

    def read_i_regs(self, address, count, srv_info):
        return DataHandler.Return(exp_code=EXP_DATA_ADDRESS)


def test_garbage_from_the_peer_marks_only_those_tags_bad():
    bank = DataBank()
    server = Peer(free_port(), data_hdl=Garbage(data_bank=bank))
    load(bank)
    bank.set_holding_registers(30, words("f", float("nan")) + words("f", float("inf")))
    server.start()
    tags = [
        HOLDING[5][0],  # f32: good
        {"name": "nan", "address": 30, "type": "float32"},
        {"name": "inf", "address": 32, "type": "float32"},
        INPUT[0][0],
        COILS[0][0],
    ]
    try:
        with Running(config(server.port, tags)) as run:
            frame = run.wait(lambda f: last_round(f) if f.height >= 2 * len(tags) else None)
            assert run.source.state == "connected"  # an exception answer is no broken link
    finally:
        server.stop()
    rows = {r["tag"]: r for r in frame.iter_rows(named=True)}
    assert (rows["dev.f32"]["quality"], rows["dev.f32"]["value"]) == ("good", 12.5)
    assert (rows["dev.coil5"]["quality"], rows["dev.coil5"]["value"]) == ("good", 1.0)
    for name in ("nan", "inf"):
        assert (rows[f"dev.{name}"]["quality"], rows[f"dev.{name}"]["reason"]) == ("bad", "not_finite")
        assert rows[f"dev.{name}"]["value"] is None
    assert (rows["dev.in_f32"]["quality"], rows["dev.in_f32"]["reason"]) == ("bad", "exception_2")


def test_a_block_that_cannot_be_decoded_is_bad_and_counted_the_others_flow(peer):
    """The decoder of one block fails (as a codec bug would): that block's tags are bad with
    `decode_error`, the failure is counted and logged with the block, and the other blocks flow."""
    tags = [HOLDING[5][0], INPUT[0][0], COILS[0][0]]
    logs: list[tuple[str, str, str | None]] = []
    cfg = config(peer.port, tags)
    run = Running(cfg)
    run.source.ctx.log = lambda level, msg, node=None: logs.append((level, msg, node))

    def broken(block):
        raise struct.error("unpack requires a buffer of 4 bytes")

    original_start = run.source.start

    def start(emit):
        original_start(emit)
        for poller in run.source._pollers:  # the input-register block's decoder breaks
            for request, decoder in zip(poller.requests, poller.decoders, strict=True):
                if request.table == "input":
                    decoder.decode = broken

    run.source.start = start

    def broken_twice(frame: pl.DataFrame) -> pl.DataFrame | None:
        # The patch lands after the pollers start, so the first round may still decode well on a
        # loaded machine: wait for the very things asserted, two failures counted and a bad last round.
        counters = run.source.counters
        if counters.get("errors_decode_error", 0) < 2 or counters.get("item_errors", 0) < 2:
            return None
        last = last_round(frame)
        return last if last.filter(pl.col("tag") == "dev.in_f32")["quality"].to_list() == ["bad"] else None

    with run:
        frame = run.wait(broken_twice)
    rows = {r["tag"]: r for r in frame.iter_rows(named=True)}
    assert rows["dev.f32"]["quality"] == "good" and rows["dev.coil5"]["quality"] == "good"
    assert (rows["dev.in_f32"]["quality"], rows["dev.in_f32"]["reason"]) == ("bad", "decode_error")
    assert run.source.counters["errors_decode_error"] >= 2 and run.source.counters["item_errors"] >= 2
    assert ("warning", "dev: input 100+2: error: unpack requires a buffer of 4 bytes", "plc") in logs


def test_a_peer_that_answers_junk_bytes_does_not_stop_the_other_device(peer):
    """A second 'device' that answers every request with junk: its tags are bad, its link is
    dropped and retried, and the good device's values keep flowing."""
    junk = socket.socket()
    junk.bind(("127.0.0.1", 0))
    junk.listen()
    stop = threading.Event()

    def serve_junk():
        junk.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = junk.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(260)
                    conn.sendall(b"\x00\x01\xff\xff\x00\x03garbage-not-modbus")
                except OSError:
                    pass

    thread = threading.Thread(target=serve_junk, daemon=True)
    thread.start()
    cfg = ModbusSourceConfig.model_validate(
        {
            "devices": [
                {
                    "name": "good",
                    "host": "127.0.0.1",
                    "port": peer.port,
                    "poll_interval_ms": 100,
                    "tags": [HOLDING[5][0]],
                },
                {
                    "name": "junk",
                    "host": "127.0.0.1",
                    "port": junk.getsockname()[1],
                    "poll_interval_ms": 100,
                    "timeout_ms": 300,
                    "backoff_max_ms": 300,
                    "tags": [HOLDING[0][0]],
                },
            ]
        }
    )
    try:
        with Running(cfg) as run:
            frame = run.wait(
                lambda f: (
                    f
                    if f.filter((pl.col("tag") == "good.f32") & (pl.col("quality") == "good")).height >= 5
                    and f.filter(pl.col("tag") == "junk.i16").height >= 2
                    else None
                ),
                timeout=15,
            )
    finally:
        stop.set()
        thread.join(2)
        junk.close()
    junk_rows = frame.filter(pl.col("tag") == "junk.i16")
    assert set(junk_rows["quality"]) == {"bad"} and junk_rows["value"].null_count() == junk_rows.height
    assert set(frame.filter(pl.col("tag") == "good.f32")["value"].drop_nulls()) == {12.5}
    assert run.source.state != "failed"
