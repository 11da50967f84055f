"""`aggregator validate` warns about a password or token given in clear (issue 13: it works, but
validation says where, with its JSON path, and what to write instead); a secret reference does not."""

from __future__ import annotations

import json

from tests.app.test_cli import run_cli


def spec(password, token) -> dict:
    return {
        "name": "clear secrets",
        "sources": [
            {
                "name": "api",
                "connector_type": "rest_api",
                "config": {
                    "url": "http://127.0.0.1:9/",
                    "auth_method": "bearer_token",
                    "auth_params": {"token": token},
                },
            }
        ],
        "destinations": [
            {
                "name": "central",
                "connector_type": "postgresql",
                "config": {
                    "host": "127.0.0.1",
                    "database": "test",
                    "username": "postgres",
                    "password": password,
                    "table": "t",
                },
            }
        ],
    }


def test_a_secret_in_clear_is_valid_with_a_warning_naming_its_path(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec("hunter2", "abc123")), encoding="utf-8")
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 0 and "valid" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(
        f"warning: {path}: sources[0].config.auth_params.token: a secret given in clear"
    )
    assert lines[1].startswith(f"warning: {path}: destinations[0].config.password: a secret given in clear")
    assert "hunter2" not in err and "abc123" not in err  # the warning never shows the value
    code, out, _ = run_cli(capsys, "validate", path, "--json")
    answer = json.loads(out)
    assert code == 0 and answer["valid"] is True
    assert [w.split(":")[0] for w in answer["warnings"]] == [
        "sources[0].config.auth_params.token",
        "destinations[0].config.password",
    ]


def test_secret_references_give_no_warning(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec({"secret": "db"}, {"secret": "api"})), encoding="utf-8")
    code, out, err = run_cli(capsys, "validate", path, "--json")
    assert code == 0 and json.loads(out)["warnings"] == [] and err == ""
