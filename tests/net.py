"""Ports for the tests that need a place where nothing listens (a dead device, a refused broker)."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A loopback port that was free a moment ago and that nothing listens on: bound and closed
    again, so connecting there is refused (and a server may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


free_port = closed_port  # the same port, named for a test server about to listen on it
