"""`aggregator outbox ...`, the engine's outbox API and the /metrics figures."""

from __future__ import annotations

import json

from app.cli import main
from engine.api.local import LocalEngine
from engine.api.outbox import LocalOutbox
from engine.outbox.manager import manager_for
from engine.service.metrics import EngineMetrics, render
from tests.outbox.conftest import commit, tags
from tests.waiting import wait_for


def _cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _poisoned(outbox, upstream):
    """Ten records delivered, one quarantined (its key refused)."""
    commit(outbox, tags(1, start=3))
    wait_for(lambda: upstream.count() == 1, what="first record")
    upstream.poison = {upstream.rows()[0][0].replace("/t3|sim|1767225600003000", "/t0|sim|1767225600004000")}
    commit(outbox, tags(10, start=3), max_tries=2)
    store = outbox.store("line1", "central")
    wait_for(lambda: store.quarantine_list() and store.pending()[1] == 0, what="quarantined")
    return store


def test_status_and_quarantine_from_the_cli(outbox, upstream, capsys):
    _poisoned(outbox, upstream)
    d = str(outbox.data_dir)
    code, out, _ = _cli(capsys, "outbox", "status", "--data-dir", d, "--json")
    [row] = json.loads(out)
    assert code == 0 and row["pipeline"] == "line1" and row["destination"] == "central"
    assert row["appended_records"] == 11 and row["quarantined_records"] == 1 and row["pending_records"] == 0
    assert row["link_state"] == "up" and row["oldest_pending_age_s"] is None
    code, out, _ = _cli(capsys, "outbox", "status", "--data-dir", d)
    assert code == 0 and "line1/central" in out and "QUARANTINED" in out

    code, out, _ = _cli(capsys, "outbox", "quarantine", "list", "--data-dir", d, "--json")
    [entry] = json.loads(out)
    assert entry["records"] == 1 and entry["tries"] == 2 and "refused" in entry["reason"]
    code, out, _ = _cli(capsys, "outbox", "quarantine", "export", "line1", "central", "--data-dir", d)
    [record] = json.loads(out)
    assert record["tag"] == "t0" and record["quarantine_id"] == entry["id"]
    # the entry's reason under its own name; the tag record keeps its own `reason` column
    assert record["quarantine_reason"] == entry["reason"] and "reason" in record
    assert record["reason"] != entry["reason"]
    code, _, err = _cli(capsys, "outbox", "quarantine", "retry", "line1", "central", "--data-dir", d)
    assert code == 1 and "--id N" in err
    upstream.poison = set()
    code, out, _ = _cli(capsys, "outbox", "quarantine", "retry", "line1", "central", "--all", "--data-dir", d)
    assert code == 0 and out.startswith("1 records put back")
    wait_for(lambda: upstream.count() == 10, what="retried record delivered")
    code, out, _ = _cli(capsys, "outbox", "quarantine", "list", "--data-dir", d)
    assert out.strip() == "the quarantine is empty"


def test_unknown_destination_is_one_line(outbox, capsys):
    code, _, err = _cli(
        capsys, "outbox", "quarantine", "delete", "nope", "x", "--all", "--data-dir", str(outbox.data_dir)
    )
    assert code != 0 and err.count("\n") == 1 and "no outbox for destination 'x' of pipeline 'nope'" in err


def test_edge_id_from_the_cli(tmp_path, capsys):
    d = str(tmp_path)
    code, out, _ = _cli(capsys, "outbox", "edge-id", "box-12", "--data-dir", d)
    assert code == 0 and out.strip() == "box-12"
    code, out, _ = _cli(capsys, "outbox", "edge-id", "--data-dir", d)
    assert out.strip() == "box-12"


def test_metrics_carry_the_outbox_figures(outbox, upstream):
    upstream.down, upstream.retry_after = True, 0.05
    commit(outbox, tags(25))
    metrics = EngineMetrics(process=False)
    metrics.attach_outbox(LocalOutbox(outbox.data_dir).status)
    wait_for(lambda: outbox.store("line1", "central").status()["link_state"] == "down", what="link down")
    text = render(metrics.registry)[0].decode()
    assert 'aggregator_outbox_pending_records{destination="central",pipeline="line1"} 25.0' in text
    assert 'aggregator_outbox_appended_records_total{destination="central",pipeline="line1"} 25.0' in text
    assert 'aggregator_outbox_link_state{destination="central",pipeline="line1",state="down"} 1.0' in text


def test_local_engine_has_the_outbox_api(outbox, upstream):
    upstream.down = True
    commit(outbox, tags(5))
    with LocalEngine(outbox.data_dir, workers=1) as engine:
        [row] = engine.outbox.status()
        assert row["pending_records"] == 5
        engine.outbox.start()  # the service: store_and_forward by default from now on
        assert manager_for(outbox.data_dir).serving
    assert not manager_for(outbox.data_dir).serving
