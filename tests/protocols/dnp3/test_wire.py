"""Responses no simulator of ours sends, written byte by byte: the master must read what follows a
g50v4 block (dnp3py lost every value after it: "cut short (unknown_width)")."""

from __future__ import annotations

import socket
import struct
import threading

import polars as pl

from .conftest import wait_for

MASTER, OUTSTATION = 1, 10


def crc(data: bytes) -> bytes:
    """DNP3's CRC-16 (polynomial 0x3D65, reflected), low byte first."""
    value = 0
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ 0xA6BC if value & 1 else value >> 1
    return struct.pack("<H", ~value & 0xFFFF)


def frame(apdu: bytes, transport_seq: int) -> bytes:
    """One link frame (unconfirmed user data, outstation -> master) carrying a one-segment APDU."""
    user = bytes([0xC0 | (transport_seq & 0x3F)]) + apdu
    header = bytes([0x05, 0x64, 5 + len(user), 0x44]) + struct.pack("<HH", MASTER, OUTSTATION)
    out = header + crc(header)
    for i in range(0, len(user), 16):
        block = user[i : i + 16]
        out += block + crc(block)
    return out


def read_apdus(sock: socket.socket):
    """The master's requests: (application control, function code), one per frame."""
    buffer = b""
    while True:
        data = sock.recv(4096)
        if not data:
            return
        buffer += data
        while len(buffer) >= 10:
            start = buffer.find(b"\x05\x64")
            if start < 0:
                buffer = b""
                break
            buffer = buffer[start:]
            length = buffer[2]
            user_len = length - 5
            size = 10 + user_len + 2 * (-(-user_len // 16))
            if len(buffer) < size:
                break
            body, user = buffer[10:size], b""
            for i in range(0, len(body), 18):
                user += body[i : i + 18][:-2]
            buffer = buffer[size:]
            if len(user) >= 3:
                yield user[1], user[2]


def integrity_response(seq: int) -> bytes:
    """A READ response: g50v4 (indexed absolute time and long interval), then g30v1 0..1."""
    apdu = bytes([0xC0 | seq, 0x81, 0x00, 0x00])
    ms = 1_700_000_000_000
    apdu += bytes([50, 4, 0x17, 1, 0]) + ms.to_bytes(6, "little") + struct.pack("<I", 60_000) + bytes([5])
    apdu += bytes([30, 1, 0x00, 0, 1])
    apdu += bytes([0x01]) + struct.pack("<i", 4242) + bytes([0x01]) + struct.pack("<i", -7)
    return apdu


def serve_one_master(server: socket.socket, stop: threading.Event) -> None:
    conn, _ = server.accept()
    with conn:
        for transport_seq, (control, function) in enumerate(read_apdus(conn)):
            if stop.is_set():
                return
            seq = control & 0x0F
            if function == 0x01:  # READ
                apdu = integrity_response(seq)
            else:  # DISABLE/ENABLE_UNSOLICITED, WRITE...: a null response
                apdu = bytes([0xC0 | seq, 0x81, 0x00, 0x00])
            conn.sendall(frame(apdu, transport_seq))


def test_values_after_a_g50v4_block_are_read(run_source):
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    threading.Thread(target=serve_one_master, args=(server, stop), daemon=True).start()
    try:
        port = server.getsockname()[1]
        source, batches = run_source(
            host="127.0.0.1",
            port=port,
            master_address=MASTER,
            outstation_address=OUTSTATION,
            timeout_ms=2000,
            accept_unsolicited=True,
            integrity_poll_interval_s=60,
            event_poll_interval_s=60,
        )
        rows = batches.wait_rows(pl.col("tag").str.starts_with("AI."))
        assert dict(zip(rows["tag"], rows["value"], strict=True)) == {"AI.0": 4242.0, "AI.1": -7.0}
        assert (rows["quality"] == "good").all()
        wait_for(lambda: source.counters["integrity_polls"] >= 1, what="the start-up poll counted")
        assert source.counters["item_errors"] == 0 and source.counters["errors"] == 0
    finally:
        stop.set()
        server.close()
