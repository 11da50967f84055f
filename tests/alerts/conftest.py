from __future__ import annotations

import pytest

from tests.alerts.smtp import SmtpServer
from tests.net import closed_port


@pytest.fixture
def smtp(tmp_path):
    server = SmtpServer(tmp_path, closed_port()).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_down(tmp_path):
    """An SMTP server not started yet (its port is free): `start()` brings it up."""
    server = SmtpServer(tmp_path, closed_port())
    yield server
    server.stop()
