from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from engine.context import RunContext
from engine.outbox.config import RemoteSinkConfig
from engine.outbox.manager import OutboxManager
from engine.outbox.sinks import remote_sink
from engine.tags import TAG_SCHEMA
from tests.outbox.upstream import FakeRemote, Upstream, attach

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tags(n: int, start: int = 0, tag_count: int = 4, source: str = "sim") -> pl.DataFrame:
    """`n` tag records, timestamps 1 ms apart from record `start` on, round-robin over tags."""
    i = pl.int_range(start, start + n, eager=True)
    return pl.DataFrame(
        {
            "timestamp": pl.Series(
                [T0 + timedelta(milliseconds=k) for k in i.to_list()], dtype=TAG_SCHEMA["timestamp"]
            ),
            "server_timestamp": pl.Series([None] * n, dtype=TAG_SCHEMA["server_timestamp"]),
            "tag": pl.Series([f"t{k % tag_count}" for k in i.to_list()], dtype=pl.String),
            "value": pl.Series([float(k) for k in i.to_list()], dtype=pl.Float64),
            "value_text": pl.Series([None] * n, dtype=pl.String),
            "quality": pl.Series(["good"] * n, dtype=pl.String),
            "reason": pl.Series([None] * n, dtype=pl.String),
            "source": pl.Series([source] * n, dtype=pl.String),
            "received_at": pl.Series([T0] * n, dtype=TAG_SCHEMA["received_at"]),
        }
    )


@pytest.fixture
def upstream(tmp_path):
    return Upstream(tmp_path / "central.sqlite")


@pytest.fixture
def outbox(tmp_path, upstream):
    data = tmp_path / "data"
    data.mkdir()
    attach(data, upstream)
    manager = OutboxManager(data)
    yield manager
    manager.close()


def make_ctx(
    manager: OutboxManager, pipeline: str = "line1", delivery: str = "store_and_forward"
) -> RunContext:
    return RunContext(pipeline=pipeline, data_dir=manager.data_dir, delivery_default=delivery, outbox=manager)


def commit(manager: OutboxManager, frame: pl.DataFrame, name: str = "central", **config) -> None:
    """One micro-batch through the destination's sink, as the streaming runtime does it."""
    ctx = make_ctx(manager)
    sink = remote_sink(FakeRemote, RemoteSinkConfig(**config), ctx, name)
    sink.open()
    sink.write(frame)
    sink.close()
