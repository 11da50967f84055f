"""The PostgreSQL tag table that the MQTT -> PostgreSQL service tests write into (the disk cap and
the outage); a module that needs another table defines its own `table` fixture, which wins."""

from __future__ import annotations

import pytest

from tests.conftest import require_service
from tests.upstream.pg import create_tag_table, drop, table_name


@pytest.fixture
def table():
    require_service("postgresql")
    require_service("mosquitto")
    name = table_name()
    create_tag_table(name)
    yield name
    drop(name)
