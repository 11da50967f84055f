"""Helpers for the PostgreSQL upstream tests: a scratch table per test on the machine's server
(127.0.0.1:5432, trust, user postgres, database test), tag batches with keys, and read-backs."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import polars as pl
import psycopg
import pyarrow as pa

from engine.connectors.postgresql import PostgreSQLSinkConfig, PostgreSQLTarget
from engine.context import RunContext

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def sql(query: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(DSN, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def config(table: str, **overrides: Any) -> PostgreSQLSinkConfig:
    raw = {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres", "table": table}
    raw.update(overrides)
    return PostgreSQLSinkConfig.model_validate(raw)


class Logs(list):
    def __call__(self, level: str, message: str, node: str | None = None) -> None:
        self.append((level, message))


def target(table: str, logs: Logs | None = None, **overrides: Any) -> PostgreSQLTarget:
    ctx = RunContext(log=logs if logs is not None else Logs())
    return PostgreSQLTarget(config(table, **overrides), ctx, "central")


def tags(start: int, count: int, *, edge: str = "edge1", tags_n: int = 10) -> pa.Table:
    """`count` tag rows (timestamp, tag, value, quality, _key), one per tag per millisecond."""
    index = pl.int_range(start, start + count, eager=True)
    frame = pl.DataFrame({"i": index}).select(
        timestamp=pl.lit(T0) + pl.duration(milliseconds=pl.col("i") // tags_n),
        tag=pl.format("line1/tag{}", pl.col("i") % tags_n),
        value=pl.col("i").cast(pl.Float64) / 2,
        quality=pl.lit("good"),
    )
    frame = frame.with_columns(
        # the shape of engine/outbox/keys.py: <edge>/<pipeline>/<destination>/<tag>|<timestamp us>
        _key=pl.format("{}/p/central/{}|{}", pl.lit(edge), pl.col("tag"), pl.col("timestamp").dt.epoch("us"))
    )
    return frame.to_arrow()


def count(table: str) -> int:
    return sql(f'SELECT count(*) FROM "{table}"')[0][0]


def keys(table: str) -> list[str]:
    return [row[0] for row in sql(f'SELECT _key FROM "{table}" ORDER BY _key')]


def exists(table: str) -> bool:
    return sql("SELECT to_regclass(%s) IS NOT NULL", (f'public."{table}"',))[0][0]


def drop(table: str) -> None:
    sql(f'DROP TABLE IF EXISTS "{table}"')


# ---- a streaming pipeline under `aggregator serve`: MQTT JSON from a publisher in the test (through
# the real Mosquitto) into PostgreSQL. Shared by the kill -9 loop, the outage, the disk-cap tests and
# tests/benchmarks/bench_outbox_latency.py.

T0_MS = 1_767_225_600_000  # record n of every tag has the timestamp T0_MS + period_ms * n by default


class Publisher(threading.Thread):
    """Publishes record n of every tag (`<prefix>/tag<k>`, QoS 1) every `period_s`, noting when
    (`sent_at[n]`, monotonic). `payload(n, k)` makes the JSON body; by default
    `{"v": n, "t": T0_MS + period_ms * n}` (a value and a source time in epoch ms)."""

    def __init__(
        self,
        prefix: str,
        *,
        tags: int = 4,
        period_s: float = 0.02,
        payload: Callable[[int, int], dict] | None = None,
    ):
        super().__init__(daemon=True)
        self.prefix = prefix
        self.tags = tags
        self.period_s = period_s
        period_ms = round(period_s * 1000)
        self.payload = payload or (lambda n, k: {"v": n, "t": T0_MS + period_ms * n})
        self.sent_at: list[float] = []  # monotonic time of record n
        self.stopping = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}")
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()

    def run(self) -> None:
        n, next_at = 0, time.monotonic()
        while not self.stopping.is_set():
            for k in range(self.tags):
                self.client.publish(f"{self.prefix}/tag{k}", json.dumps(self.payload(n, k)), qos=1)
            self.sent_at.append(time.monotonic())
            n += 1
            next_at += self.period_s
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_to_pg_spec(
    prefix: str, table: str, *, name: str, port: int = 5432, max_latency_ms: int = 200, **destination: Any
) -> dict:
    """A real_time pipeline: the publisher's topics (`<prefix>/#`) into `table` (PostgreSQL on
    127.0.0.1:`port`, e.g. a fault proxy's); `destination` adds to the destination's config."""
    return {
        "name": name,
        "spec_version": 1,
        "nodes": [
            {
                "id": "mqtt",
                "kind": "source",
                "connector_type": "mqtt",
                "config": {
                    "topics": [f"{prefix}/#"],
                    "qos": 1,
                    "json": {"value_path": "$.v", "timestamp_path": "$.t", "epoch_unit": "ms"},
                    "batch_interval_ms": 50,
                    "reconnect_min_delay": 0.2,
                    "reconnect_max_delay": 1.0,
                },
            },
            {
                "id": "central",
                "kind": "destination",
                "inputs": ["mqtt"],
                "connector_type": "postgresql",
                "config": {
                    "host": "127.0.0.1",
                    "port": port,
                    "database": "test",
                    "table": table,
                    "connect_timeout": 2,
                    **destination,
                },
            },
        ],
        "schedule": {"type": "real_time", "max_latency_ms": max_latency_ms},
    }


def write_pipeline(folder: Path, spec: dict) -> Path:
    """`spec` as `<folder>/pipelines/<name>.json`; returns the pipelines folder (for `--pipelines`)."""
    pipelines = folder / "pipelines"
    pipelines.mkdir(exist_ok=True)
    (pipelines / f"{spec['name']}.json").write_text(json.dumps(spec), encoding="utf-8")
    return pipelines


def create_tag_table(table: str) -> None:
    """The tag table made beforehand, with two server-side columns the destination leaves to their
    defaults: `_id` (identity: the order rows were inserted in) and `committed_at`
    (`clock_timestamp()`: when the server inserted each row)."""
    sql(
        f'CREATE TABLE "{table}" ('
        " _id bigint GENERATED ALWAYS AS IDENTITY,"
        " committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
        ' _key text COLLATE "C" NOT NULL)'
    )  # the data's columns are added by the destination from its first batch


def stored(table: str, period_ms: int = 20) -> dict[str, list[int]]:
    """Per tag, the record numbers n stored (from the default payload's timestamps), in time order."""
    rows = sql(
        f'SELECT tag, (extract(epoch FROM timestamp) * 1000)::bigint FROM "{table}" ORDER BY tag, timestamp'
    )
    out: dict[str, list[int]] = {}
    for tag, ms in rows:
        out.setdefault(tag, []).append((ms - T0_MS) // period_ms)
    return out


def count_or_zero(table: str) -> int:
    return count(table) if exists(table) else 0


def outbox_status(data_dir: Path, destination: str = "central") -> dict | None:
    """The destination's row of `aggregator outbox status --json` (through the service when one
    owns the data directory), or None before its outbox exists."""
    from tests.service.conftest import cli

    done = cli("outbox", "status", "--data-dir", data_dir, "--json")
    assert done.returncode == 0, done.stderr
    entries = [e for e in json.loads(done.stdout) if e.get("destination") == destination]
    assert len(entries) <= 1, entries
    return entries[0] if entries else None


def drained(data_dir: Path) -> dict | None:
    """The status row once nothing is pending, else None."""
    entry = outbox_status(data_dir)
    return entry if entry is not None and entry["pending_records"] == 0 else None
