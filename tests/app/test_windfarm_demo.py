"""The wind-farm demo end to end: three real protocol simulators, the streaming executor, the
historian and the power-curve check, through the CLI."""

from __future__ import annotations

import json

import duckdb
import pytest

import protocols
from app.cli import main
from app.windfarm_demo import shipped_spec
from engine.spec.io import load_pipeline
from resources import __file__ as resources_init


def test_the_shipped_pipeline_is_the_demo_pipeline_at_the_simulators_usual_ports():
    from pathlib import Path

    protocols.register_all()
    shipped = Path(resources_init).parent / "pipelines" / "wind_farm.json"
    assert json.loads(shipped.read_text()) == shipped_spec()
    compiled = load_pipeline(shipped)
    assert {n.id for n in compiled.graph.nodes} >= {"turbines", "meters", "rtu", "quality", "historian"}
    assert compiled.graph.schedule.type == "real_time"


@pytest.mark.slow
def test_wind_farm_demo_stores_every_source_and_finds_the_underperforming_turbine(tmp_path, capsys):
    code = main(["demo", "--wind-farm", "--seconds", "5", "--data-dir", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out.get("error")
    assert out["status"] == "success"
    summary = out["summary"]
    assert set(summary["tags_by_source"]) == {"turbines", "meters", "rtu"}
    assert summary["tags_by_source"]["turbines"] == 40  # 10 turbines x 4 tags
    assert summary["dropped"] == 0
    assert out["rows_out"] == out["rows_in"] > 1000
    con = duckdb.connect(str(tmp_path / "historian.duckdb"), read_only=True)
    try:
        stored = con.execute("SELECT count(*) FROM tags").fetchall()[0][0]
        median = dict(
            con.execute(
                "SELECT turbine, median(deviation_pct) FROM turbine_performance"
                " WHERE deviation_pct IS NOT NULL GROUP BY turbine"
            ).fetchall()
        )
    finally:
        con.close()
    assert stored == out["rows_out"]
    # protocols/windfarm.py gives Turbine04 a pitch fault (15% less power): the curve check sees it.
    assert median["Turbine04"] < -10 < median["Turbine01"]


def test_wind_farm_demo_needs_a_positive_duration(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--wind-farm", "--seconds", "0"])
    assert exit_info.value.code == 2
    assert "--seconds: 0.0 is not positive" in capsys.readouterr().err
