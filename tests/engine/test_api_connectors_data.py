"""EngineAPI connectors, data and dashboard calls against a real data directory, a real OPC UA
simulator and a closed port."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from engine.api import LocalEngine
from engine.errors import ConnectorError, DataError
from tests.net import closed_port


@pytest.fixture
def engine(tmp_path):
    import protocols

    protocols.register_all()
    eng = LocalEngine(tmp_path / "data")
    yield eng
    eng.close()


def opcua_browse_classmethod(monkeypatch):
    """The OPC UA connector's tag browser is reached through the engine registry (the GUI may not
    import protocols): it must be there."""
    from engine.connectors import registry

    assert callable(getattr(registry.get("opc_ua"), "browse", None))


def test_saved_connectors_round_trip_and_refuse_clear_secrets(engine):
    config = {"endpoint": "opc.tcp://127.0.0.1:4840", "password": {"secret": "plc"}, "username": "op"}
    saved = engine.connectors.save("plant", "opc_ua", "source", config)
    assert saved["config"] == config and saved["connector_type"] == "opc_ua"
    assert [c["name"] for c in engine.connectors.list()] == ["plant"]
    assert "plc" in engine.connectors.secret_names()
    with pytest.raises(ConnectorError, match=r"password holds a secret in clear"):
        engine.connectors.save("bad", "opc_ua", "source", {"endpoint": "x", "password": "hunter2"})
    with pytest.raises(ConnectorError, match="cannot be a destination"):
        engine.connectors.save("bad", "opc_ua", "destination", {})
    with pytest.raises(ConnectorError, match="unknown connector type 'nope'"):
        engine.connectors.save("bad", "nope", "source", {})
    assert engine.connectors.delete("plant") and engine.connectors.list() == []
    # the stored row never holds a value, only the reference
    raw = list(engine.workspace.metadata.db.query("SELECT config FROM connectors"))
    assert raw == []


def test_set_secret_names_it(engine):
    engine.workspace.secrets._keyring_set = lambda name, value: (
        False
    )  # this machine's keyring stays untouched
    assert engine.connectors.set_secret("broker", "s3cret") == "encrypted file"
    assert "broker" in engine.connectors.secret_names()
    assert engine.workspace.secrets.get("broker") == "s3cret"


def test_connection_success_and_failure(engine):
    ok = engine.connectors.test("historian", "destination", {}).result(30)
    assert ok["ok"] is True and ok["error"] is None
    duck = engine.connectors.test("duckdb", "destination", {"table": "t"}).result(30)
    assert duck["ok"] is True
    port = closed_port()
    bad = engine.connectors.test(
        "opc_ua", "source", {"endpoint": f"opc.tcp://127.0.0.1:{port}", "nodes": ["ns=2;s=X"]}
    ).result(60)
    assert bad["ok"] is False and str(port) in bad["error"]
    invalid = engine.connectors.test("opc_ua", "source", {}).result(30)
    assert invalid["ok"] is False and invalid["error"].startswith("endpoint: Field required")


def test_connection_and_browse_against_the_simulator(engine, monkeypatch):
    from protocols.opcua.simulator import OpcUaSimulator

    opcua_browse_classmethod(monkeypatch)
    with OpcUaSimulator(turbines=2, interval_s=0.5) as sim:
        result = engine.connectors.test(
            "opc_ua", "source", {"endpoint": sim.endpoint, "browse_root": "ns=2;s=WindFarm"}
        ).result(60)
        assert result == {"ok": True, "error": None, "detail": None, "seconds": result["seconds"]}
        top = engine.connectors.browse_opcua({"endpoint": sim.endpoint}).result(60)
        farm = next(n for n in top if "WindFarm" in n["browse_name"])
        turbines = engine.connectors.browse_opcua({"endpoint": sim.endpoint}, farm["node_id"]).result(60)
        assert len([t for t in turbines if t["has_children"]]) == 2
        tags = engine.connectors.browse_opcua({"endpoint": sim.endpoint}, turbines[0]["node_id"]).result(60)
        assert tags and all(t["node_class"] == "Variable" for t in tags)


def _historian_table(engine, name="orders", rows=25):
    cur = engine.workspace.historian.cursor()
    frame = pl.DataFrame({"id": range(rows), "amount": [i * 1.5 for i in range(rows)]})
    cur.register("f", frame.to_arrow())
    cur.execute(f"CREATE TABLE {name} AS SELECT * FROM f")
    cur.execute(f"CREATE VIEW big_{name} AS SELECT * FROM {name} WHERE amount > 10")
    cur.close()


def test_data_objects_preview_sql_and_export(engine, tmp_path):
    _historian_table(engine)
    objects = {o["name"]: o for o in engine.data.objects()}
    assert objects["orders"]["kind"] == "table" and objects["big_orders"]["kind"] == "view"
    page = engine.data.preview_object("orders", offset=10, limit=5)
    assert page["total"] == 25 and page["frame"]["id"].to_list() == [10, 11, 12, 13, 14]
    with pytest.raises(DataError, match="no table or view 'nope'"):
        engine.data.preview_object("nope")
    result = engine.data.sql("SELECT id, amount FROM orders ORDER BY id", limit=7)
    assert result["truncated"] and result["frame"].height == 7
    for bad in ("DROP TABLE orders", "INSERT INTO orders VALUES (1, 2)", "SELECT 1; SELECT 2"):
        with pytest.raises(DataError):
            engine.data.sql(bad)
    with pytest.raises(DataError, match="SQL console"):
        engine.data.sql("SELECT * FROM missing_table")
    frame = result["frame"]
    for suffix in ("csv", "parquet", "xlsx"):
        out = engine.data.export_frame(frame, tmp_path / f"out.{suffix}").result(30)
        back = pl.read_excel(out) if suffix == "xlsx" else getattr(pl, f"read_{suffix}")(out)
        assert back["id"].to_list() == frame["id"].to_list()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left
    with pytest.raises(DataError, match="allowed: csv, parquet, xlsx"):
        engine.data.export_frame(frame, tmp_path / "out.txt").result(30)
    whole = engine.data.export_object("big_orders", tmp_path / "view.csv").result(30)
    assert pl.read_csv(whole).height == 18


def test_dashboard_counts_real_runs(engine, tmp_path):
    from engine.runner import run_pipeline
    from engine.spec.validate import validate
    from tests.pipelines import csv_into_duckdb

    spec = csv_into_duckdb(tmp_path, 3, name="tiny", table="tiny")
    before = engine.health.summary()
    for _ in range(2):
        record = run_pipeline(validate(spec), engine.workspace, base_dir=tmp_path)
        assert record["status"] == "success", record
    summary = engine.health.summary()
    assert summary["runs_today"] == before["runs_today"] + 2
    assert summary["rows_today"] == before["rows_today"] + 6
    assert summary["failures_today"] == 0 and summary["pipelines"] >= 1
    assert summary["health"]["disk_free_bytes"] > 0 and summary["health"]["engine"] == "ready"
    tomorrow = datetime(2999, 1, 1, tzinfo=UTC)
    assert engine.health.summary(now=tomorrow)["runs_today"] == 0
    assert engine.health.recent_runs(1)[0]["pipeline"] == "tiny"
