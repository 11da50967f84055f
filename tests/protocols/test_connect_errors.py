"""One rule names a failed connection for Modbus TCP and MQTT (protocols/connect_errors.py)."""

from __future__ import annotations

import socket

import pytest

from protocols.connect_errors import os_error_reason
from protocols.modbus.connector import describe_os_error
from protocols.mqtt.source import _connect_error
from tests.net import closed_port


def refused() -> OSError:
    """A real refused connection: nothing listens on a closed port."""
    with pytest.raises(OSError) as info, socket.create_connection(("127.0.0.1", closed_port()), timeout=2):
        pass
    return info.value


def test_a_refused_connection_reads_the_same_in_modbus_and_mqtt():
    exc = refused()
    assert os_error_reason(exc, "1 s") == "connection refused"
    assert describe_os_error(exc, 1000) == "connection refused"
    assert _connect_error(exc, 5.0) == "connection refused"


def test_the_timeout_is_said_in_each_protocols_own_unit():
    exc = TimeoutError("timed out")
    assert describe_os_error(exc, 300) == "no answer within 300 ms"
    assert _connect_error(exc, 2.5) == "no answer within 2.5 s"


def test_what_is_no_os_failure_each_protocol_names_in_its_own_words():
    exc = ValueError("bad frame")
    assert os_error_reason(exc, "1 s") is None
    assert describe_os_error(exc, 1000) == "ValueError: bad frame"
    assert _connect_error(exc, 1.0) == "connection failed (ValueError: bad frame)"
    assert _connect_error(None, 1.0) == "connection failed"
