"""Secret values never leak through errors (issue 9, C15): a secret whose value ends up in an error
(here a file path that does not exist) shows as `***` on stderr, in `--json`, in metadata.db and in
log lines, through a real run of the command line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from app.cli import main
from engine.secrets import MASK, SecretStore, mask

SECRET_DIR = "plant-7-confidential-share"


@pytest.fixture
def secret_path(tmp_path, monkeypatch) -> str:
    """A secret that is a file path; the file does not exist, so the run's error names the path."""
    value = str(tmp_path / SECRET_DIR / "orders-2026.csv")
    monkeypatch.setenv("AGGREGATOR_SECRET_ORDERS_PATH", value)
    return value


def spec_file(tmp_path: Path) -> Path:
    doc = {
        "name": "Secret path",
        "sources": [
            {
                "name": "orders",
                "connector_type": "file",
                "config": {"path": {"secret": "orders_path"}, "format": "csv"},
            }
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
    }
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(doc))
    return path


def stored_bytes(data_dir: Path) -> bytes:
    """Everything the metadata store holds on disk (database, WAL and shared memory files)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("metadata.db*")))


def test_secret_path_in_a_run_error_is_masked_on_stderr_json_and_disk(tmp_path, secret_path, capsys):
    spec, data = spec_file(tmp_path), tmp_path / "data"

    assert main(["run", str(spec), "--data-dir", str(data)]) == 1
    out, err = capsys.readouterr()
    assert secret_path not in out + err and SECRET_DIR not in out + err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and f"{MASK}: file not found" in error_lines[0], err

    assert main(["run", str(spec), "--json", "--data-dir", str(data)]) == 1
    out, err = capsys.readouterr()
    record = json.loads(out)
    assert record["status"] == "failed" and record["error"].startswith(MASK), record["error"]
    assert SECRET_DIR not in out + err

    stored = stored_bytes(data)
    assert SECRET_DIR.encode() not in stored and MASK.encode() in stored
    from engine.workspace import Workspace

    with Workspace(data) as ws:
        runs = ws.metadata.runs(pipeline="Secret path")
        assert len(runs) == 2 and all(r["error"].startswith(MASK) for r in runs)
        logs = [line["message"] for line in ws.metadata.logs(runs[0]["run_id"])]
    assert any(MASK in m for m in logs) and not any(SECRET_DIR in m for m in logs)


def test_debug_traceback_is_masked_too(tmp_path, secret_path, capsys):
    assert main(["--debug", "run", str(spec_file(tmp_path)), "--data-dir", str(tmp_path / "data")]) == 1
    out, err = capsys.readouterr()
    assert SECRET_DIR not in out + err and MASK in err


def test_log_records_of_any_logger_are_masked(tmp_path, monkeypatch):
    """Library loggers (not only the root) log through root's handlers: the value is masked there,
    in the message, its arguments and a formatted exception alike."""
    value = "s3cr3t-Pa55word-for-the-plc"
    monkeypatch.setenv("AGGREGATOR_SECRET_PLC_PASSWORD", value)
    assert SecretStore(tmp_path / "data").get("plc_password") == value  # resolving it registers it
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        library = logging.getLogger("some.library.client")
        library.warning("login to opc.tcp://plc:4840 as admin:%s refused", value)
        try:
            raise ConnectionError(f"auth failed for password {value!r}")
        except ConnectionError:
            library.exception("session lost")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert value not in text, text
    assert f"admin:{MASK} refused" in text and f"password '{MASK}'" in text


def test_mask_hides_every_resolved_value_and_its_escaped_forms(tmp_path, monkeypatch):
    value = 'C:\\plant\\"line 4"'
    monkeypatch.setenv("AGGREGATOR_SECRET_SHARE", value)
    SecretStore(tmp_path / "data").get("share")
    assert mask(f"cannot open {value}") == f"cannot open {MASK}"
    assert mask(json.dumps({"error": value})) == json.dumps({"error": MASK})
    assert mask(f"bad value {value!r}") == f"bad value '{MASK}'"
    assert mask("nothing secret here") == "nothing secret here"


def test_a_source_state_line_on_the_console_is_masked(tmp_path, monkeypatch):
    from engine.streaming.run import SourceStateLines

    monkeypatch.setenv("AGGREGATOR_SECRET_BROKER_PASSWORD", "s3cret-broker-pw")
    SecretStore(tmp_path / "data").get("broker_password")
    lines = SourceStateLines()
    event = {
        "event": "source_state",
        "node": "plc",
        "state": "lost",
        "detail": "mqtt://operator:s3cret-broker-pw@127.0.0.1:1: connection refused",
    }
    line = lines(event)
    assert line == f"source 'plc' lost: mqtt://operator:{MASK}@127.0.0.1:1: connection refused"
