"""DuckDB's freed memory in a foreground real-time run (issue 12 item 4, the idle pipeline's RSS):
the historian of an `aggregator run` of a real-time pipeline is opened with DuckDB's allocator set
to hand freed memory back when each task ends (`engine.store.historian.RELEASE_AT_ONCE`); a batch
run, the service and everything else keep DuckDB's defaults (the setting costs bulk queries CPU).
What it saves is measured by tests/benchmarks/bench_idle.py (docs/performance.md, "DuckDB's freed
memory"); these tests check who gets it, on real DuckDB connections and a real run."""

from __future__ import annotations

import json

import duckdb

from app.cli import main
from engine.api.connect import without_viewers
from engine.store import historian as historian_module
from engine.store.historian import RELEASE_AT_ONCE, Historian
from protocols.modbus.simulator import ModbusSimulator
from tests.pipelines import csv_into_duckdb, one_modbus_tag

NAMES = tuple(RELEASE_AT_ONCE)


def allocator_settings(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    marks = ", ".join("?" for _ in NAMES)
    rows = con.execute(f"SELECT name, value FROM duckdb_settings() WHERE name IN ({marks})", list(NAMES))
    return dict(rows.fetchall())


def reference_settings(config: dict[str, str]) -> dict[str, str]:
    """What DuckDB reports for `config` on a connection of its own (closed again)."""
    con = duckdb.connect(config=config)
    try:
        return allocator_settings(con)
    finally:
        con.close()


def opened_settings(path) -> dict[str, str]:
    historian = Historian(path)
    try:
        return allocator_settings(historian.cursor())
    finally:
        historian.close()


def test_only_a_streaming_process_without_viewers_opens_its_historian_to_release_at_once(tmp_path):
    released = reference_settings(dict(RELEASE_AT_ONCE))
    default = reference_settings({})
    assert released != default  # the settings change something DuckDB reports

    with without_viewers(streaming=True):
        assert opened_settings(tmp_path / "streaming.duckdb") == released
    with without_viewers():  # a foreground batch run
        assert opened_settings(tmp_path / "batch.duckdb") == default
    assert opened_settings(tmp_path / "after.duckdb") == default  # the process's default is back


def spy_on_configs(monkeypatch) -> list[dict]:
    """The settings of every historian connection opened (the real function, recorded)."""
    configs: list[dict] = []
    real = historian_module.connection_config

    def recorded(*args, **kwargs):
        configs.append(real(*args, **kwargs))
        return configs[-1]

    monkeypatch.setattr(historian_module, "connection_config", recorded)
    return configs


def test_aggregator_run_of_a_stream_releases_at_once_and_a_batch_run_does_not(tmp_path, monkeypatch):
    configs = spy_on_configs(monkeypatch)
    with ModbusSimulator(meters=1) as sim:
        spec = tmp_path / "one_tag.json"
        spec.write_text(json.dumps(one_modbus_tag(sim.port)))
        assert main(["run", str(spec), "--seconds", "2", "--data-dir", str(tmp_path / "stream")]) == 0
    assert configs, "the stream opened no historian"
    assert all(config.items() >= RELEASE_AT_ONCE.items() for config in configs)

    configs.clear()
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(csv_into_duckdb(tmp_path, 10, name="ten rows", table="ten")))
    assert main(["run", str(batch), "--data-dir", str(tmp_path / "batch")]) == 0
    assert configs, "the batch run opened no historian"
    assert not any(set(config).intersection(NAMES) for config in configs)
