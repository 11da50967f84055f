"""systemd's notification protocol, received on a real datagram socket given as $NOTIFY_SOCKET."""

from __future__ import annotations

import socket
import time

import pytest

from engine.service.sdnotify import Notifier


def _receive_until(sock: socket.socket, want: str, timeout: float = 30.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(want in g for g in got):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {want!r} within {timeout:g} s; got {got}") from None
    return got


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_watchdog_stopping_from_a_real_serve(serve, tmp_path, abstract):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"aggregator-test-{time.monotonic_ns()}"
        sock.bind(b"\0" + name.encode())
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    with sock:
        sp = serve(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        got = _receive_until(sock, "READY=1")
        assert any(g.startswith("READY=1") and sp.url in g for g in got)  # READY with its STATUS line
        pings = _receive_until(sock, "WATCHDOG=1")
        pings += _receive_until(sock, "WATCHDOG=1")  # again: it keeps pinging (every 0.1 s)
        assert sum(p == "WATCHDOG=1" for p in pings) >= 2
        assert sp.stop() == 0
        assert "STOPPING=1" in _receive_until(sock, "STOPPING=1")


def test_no_notify_socket_sends_nothing():
    n = Notifier(environ={})
    assert not n.enabled and not n.notify("READY=1")


def test_watchdog_meant_for_another_pid_is_ignored():
    n = Notifier(environ={"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None
