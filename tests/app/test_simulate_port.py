"""A busy port for a simulator is one line: `aggregator simulate <protocol> --port <busy>` says
`error: port N is in use ...` and exits 2, for each of the three simulators (all start through
app/simulate.py, which checks the port before the server binds it)."""

from __future__ import annotations

import socket

import pytest

from app.cli import main
from tests.net import free_port


@pytest.fixture
def busy_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("protocol", ["modbus", "opcua", "dnp3"])
def test_a_busy_port_is_one_line_and_exit_2(protocol, busy_port, capsys):
    code = main(["simulate", protocol, "--port", str(busy_port), "--seconds", "1"])
    out = capsys.readouterr()
    assert code == 2
    assert out.err == (
        f"error: port {busy_port} is in use on 127.0.0.1 (another program listens on it); "
        "choose another with --port\n"
    )
    assert out.out == ""


def test_a_port_taken_on_every_address_is_busy_too(capsys):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["simulate", "modbus", "--port", str(port), "--seconds", "1"])
    assert code == 2 and f"port {port} is in use" in capsys.readouterr().err


def test_a_free_port_serves(capsys):
    port = free_port()
    assert main(["simulate", "modbus", "--port", str(port), "--seconds", "0.5"]) == 0
    out = capsys.readouterr()
    assert f"tcp://127.0.0.1:{port}" in out.out and out.err == ""
