"""Secrets: `{"secret": NAME}` config values resolved at run time, never stored, never printed.

`test_secret_source` is a test peer: a source whose `token` and `path` may be secret references
(typed loosely so that validation lets the reference through), which records what it was given at
run time and reads the file at `path`.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from app.cli import main
from engine.connectors import registry
from engine.connectors.base import DEFAULT_BATCH_ROWS, Connector, ConnectorConfig, Source
from engine.runner import run_pipeline
from engine.secrets import SecretStore
from engine.spec.validate import validate
from engine.workspace import Workspace

SEEN: list[dict[str, Any]] = []
TOKEN = "tok-9f8e7d6c5b4a"  # secret values: must never show up where they are not needed
PASSWORD = "hunter2-correct-horse"
SALT = "pepper-and-salt-42"


class SecretSourceConfig(ConnectorConfig):
    path: Any
    token: Any = None


class SecretSource(Source):
    config: SecretSourceConfig

    def read(self, limit: int | None = None, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pl.DataFrame]:
        SEEN.append({"path": self.config.path, "token": self.config.token})
        yield pl.read_json(self.ctx.resolve_path(self.config.path))


class SecretConnector(Connector):
    connector_type = "test_secret_source"
    SourceConfig = SecretSourceConfig

    @classmethod
    def make_source(cls, config, ctx, name: str) -> Source:
        return SecretSource(config, ctx, name)


@pytest.fixture(autouse=True, scope="module")
def secret_connector():
    registry.register(SecretConnector)
    yield
    registry._TYPES.pop("test_secret_source", None)


@pytest.fixture(autouse=True)
def no_keyring(monkeypatch):
    """No OS keyring in these tests: the environment and the encrypted file are what is tested."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    for name in ("API_TOKEN", "DB_PASSWORD", "ORDERS_PATH", "HASH_SALT"):
        monkeypatch.delenv(f"AGGREGATOR_SECRET_{name}", raising=False)
    SEEN.clear()
    yield
    keyring.set_keyring(previous)


def write_users(folder: Path, name: str = "users.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps([{"user": "ann", "n": 1}, {"user": "bob", "n": 2}]))
    return path


def secret_doc(token: Any, path: Any = "users.json", steps: list | None = None) -> dict:
    return {
        "name": "Secret users",
        "sources": [
            {
                "name": "users",
                "connector_type": "test_secret_source",
                "config": {"path": path, "token": token},
            }
        ],
        "transformations": steps or [],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }


def stored_bytes(data_dir: Path) -> bytes:
    """Everything the metadata store holds on disk (database, WAL and shared memory files)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("metadata.db*")))


def test_config_secret_is_resolved_at_run_time_from_the_environment(tmp_path, monkeypatch):
    write_users(tmp_path)
    monkeypatch.setenv("AGGREGATOR_SECRET_API_TOKEN", TOKEN)
    compiled = validate(secret_doc({"secret": "api_token"}))
    # The compiled pipeline keeps the reference; only the run resolves it.
    assert compiled.graph.nodes[0].config["token"] == {"secret": "api_token"}
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(compiled, ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert SEEN == [{"path": "users.json", "token": TOKEN}]
        spec = ws.metadata.pipeline_spec("Secret users")
        assert spec["nodes"][0]["config"]["token"] == {"secret": "api_token"}
        assert TOKEN not in json.dumps(spec)
        assert all(TOKEN not in line["message"] for line in ws.metadata.logs(record["run_id"]))
    assert TOKEN.encode() not in stored_bytes(tmp_path / "data")
    assert json.loads((tmp_path / "out.json").read_text())[1] == {"user": "bob", "n": 2}


def test_nested_secret_path_resolves_too(tmp_path, monkeypatch):
    users = write_users(tmp_path / "private", "hidden.json")
    monkeypatch.setenv("AGGREGATOR_SECRET_ORDERS_PATH", str(users))
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(secret_doc(None, {"secret": "orders_path"})), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
    assert SEEN[0]["path"] == str(users)
    assert str(users).encode() not in stored_bytes(tmp_path / "data")


def test_missing_secret_fails_the_run_with_one_line_naming_it(tmp_path, monkeypatch, capsys):
    write_users(tmp_path)
    monkeypatch.setenv("AGGREGATOR_SECRET_API_TOKEN", TOKEN)
    doc = secret_doc({"secret": "api_token"}, {"secret": "db_password"})
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        error = record["error"]
        assert "'db_password'" in error and "AGGREGATOR_SECRET_DB_PASSWORD" in error
        assert "\n" not in error and TOKEN not in error
        assert all(TOKEN not in line["message"] for line in ws.metadata.logs(record["run_id"]))
    assert SEEN == []  # the source never started
    assert not (tmp_path / "out.json").exists()

    spec_path = tmp_path / "pipeline.json"
    spec_path.write_text(json.dumps(doc))
    code = main(["run", str(spec_path), "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line]
    assert code == 1 and len(lines) == 1 and "'db_password'" in lines[0], err
    assert TOKEN not in out + err and "Traceback" not in err


def test_encrypted_file_fallback_round_trips(tmp_path, monkeypatch, config_dir):
    store = SecretStore(tmp_path / "data")
    assert store.key_file == config_dir / "secrets.key"
    assert store.set("db_password", PASSWORD, use_keyring=False) == "encrypted file"
    assert store.set("api_token", TOKEN, use_keyring=False) == "encrypted file"
    assert store.get("db_password") == PASSWORD
    # With no usable keyring, the default (keyring first) falls back to the encrypted file as well.
    assert store.set("hash_salt", SALT) == "encrypted file"
    again = SecretStore(tmp_path / "data")  # a new process: the key file and the store on disk
    assert again.get("db_password") == PASSWORD and again.get("api_token") == TOKEN

    encrypted = (tmp_path / "data" / "secrets.enc").read_bytes()
    assert all(v.encode() not in encrypted for v in (PASSWORD, TOKEN, SALT))
    assert b"db_password" not in encrypted  # not even the names are readable
    assert not (tmp_path / "data" / ".secrets.key").exists()  # the key is not beside the secrets
    assert stat.S_IMODE(store.key_file.stat().st_mode) == 0o600
    assert list((tmp_path / "data").glob("*.tmp")) == []

    monkeypatch.setenv("AGGREGATOR_SECRET_DB_PASSWORD", "from-env")
    assert again.get("db_password") == "from-env"  # the environment comes first


def test_encrypted_file_secret_reaches_a_run(tmp_path):
    write_users(tmp_path)
    with Workspace(tmp_path / "data") as ws:
        ws.secrets.set("api_token", TOKEN, use_keyring=False)
        record = run_pipeline(validate(secret_doc({"secret": "api_token"})), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
    assert SEEN[0]["token"] == TOKEN
    assert TOKEN.encode() not in stored_bytes(tmp_path / "data")


def test_salt_secret_is_used_but_never_stored(tmp_path, monkeypatch):
    write_users(tmp_path)
    monkeypatch.setenv("AGGREGATOR_SECRET_HASH_SALT", SALT)
    steps = [{"type": "hashing", "field_names": ["user"], "algorithm": "sha256", "salt_secret": "hash_salt"}]
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(secret_doc(None, steps=steps)), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert (
            ws.metadata.pipeline_spec("Secret users")["nodes"][1]["transform"]["salt_secret"] == "hash_salt"
        )
    import hashlib

    rows = json.loads((tmp_path / "out.json").read_text())
    assert rows[0]["user"] == hashlib.sha256((SALT + "ann").encode()).hexdigest()
    assert SALT.encode() not in stored_bytes(tmp_path / "data")


# ---- found while writing these tests, fixed since -----------------------------------------------


def test_file_source_path_given_as_secret_validates_and_runs(tmp_path, monkeypatch):
    """Spec section 4: any connector config value may be `{"secret": NAME}`, even where the
    connector expects text (a file `path`): validation accepts the reference, the run resolves it."""
    users = write_users(tmp_path / "private", "hidden.json")
    monkeypatch.setenv("AGGREGATOR_SECRET_ORDERS_PATH", str(users))
    doc = {
        "name": "Secret path",
        "sources": [
            {
                "name": "users",
                "connector_type": "file",
                "config": {"path": {"secret": "orders_path"}, "format": "json"},
            }
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    compiled = validate(doc)
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(compiled, ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert ws.metadata.pipeline_spec("Secret path")["nodes"][0]["config"]["path"] == {
            "secret": "orders_path"
        }
    assert [r["user"] for r in json.loads((tmp_path / "out.json").read_text())] == ["ann", "bob"]
    assert str(users).encode() not in stored_bytes(tmp_path / "data")


def test_missing_salt_secret_error_is_one_line(tmp_path):
    """A missing secret read inside a transformation (hashing `salt_secret`) fails the run with one
    line, without Polars' "This error occurred in the following expression" appendix."""
    write_users(tmp_path)
    steps = [{"type": "hashing", "field_names": ["user"], "salt_secret": "hash_salt"}]
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(secret_doc(None, steps=steps)), ws, base_dir=tmp_path)
    assert record["status"] == "failed"
    assert "'hash_salt'" in record["error"] and "hashing_1" in record["error"]
    assert "\n" not in record["error"], record["error"]


def test_missing_secret_hint_names_a_real_command(capsys):
    """The missing-secret message names `aggregator secret set NAME`, and that command works."""
    with pytest.raises(SystemExit) as exit_info:
        main(["secret", "--help"])
    capsys.readouterr()
    assert exit_info.value.code == 0


def test_secret_set_and_check_commands(tmp_path, capsys, monkeypatch):
    import io

    data = tmp_path / "data"
    assert main(["secret", "check", "db_password", "--data-dir", str(data)]) == 1
    assert "aggregator secret set db_password" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-value\n"))
    assert main(["secret", "set", "db_password", "--file-store", "--data-dir", str(data)]) == 0
    assert "encrypted file" in capsys.readouterr().out
    assert main(["secret", "check", "db_password", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "is set" in out and "s3cret" not in out
    assert b"s3cret-value" not in (data / "secrets.enc").read_bytes()
    from engine.secrets import SecretStore

    assert SecretStore(data).get("db_password") == "s3cret-value"


def test_a_missing_secret_is_not_retried(tmp_path):
    """A missing secret is a configuration problem: retrying cannot heal it, so no back-off is spent."""
    write_users(tmp_path)
    doc = secret_doc({"secret": "never_set"})
    doc["error_handling"] = {"retry_policy": {"max_retries": 3, "initial_delay_seconds": 5}}
    delays: list[float] = []
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path, sleep=delays.append)
        logs = [line["message"] for line in ws.metadata.logs(record["run_id"])]
    assert record["status"] == "failed" and "never_set" in record["error"]
    assert delays == [] and not any("retrying" in m for m in logs)


# ---- where the key lives (issue 9, C12) ---------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _old_version_store(data: Path, values: dict[str, str]) -> bytes:
    """A data directory as older versions left it: the key beside the encrypted file."""
    from cryptography.fernet import Fernet

    data.mkdir(parents=True)
    key = Fernet.generate_key()
    (data / ".secrets.key").write_bytes(key)
    (data / ".secrets.key").chmod(0o600)
    (data / "secrets.enc").write_bytes(Fernet(key).encrypt(json.dumps(values).encode()))
    return key


def test_key_lives_in_the_config_dir_with_owner_only_modes(tmp_path, config_dir):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    with Workspace(data) as ws:
        assert _mode(data) == 0o700  # an existing, wider data directory is narrowed too
        ws.secrets.set("db_password", PASSWORD, use_keyring=False)
    key = config_dir / "secrets.key"
    assert _mode(key) == 0o600 and _mode(config_dir) == 0o700
    assert _mode(data / "secrets.enc") == 0o600
    assert not (data / ".secrets.key").exists() and not list(data.glob("*key*"))
    with Workspace(tmp_path / "fresh") as ws:  # a new data directory is created 0700
        assert _mode(tmp_path / "fresh") == 0o700


def test_a_key_left_in_the_data_dir_moves_to_the_config_dir_at_first_use(tmp_path, config_dir):
    data = tmp_path / "data"
    key = _old_version_store(data, {"db_password": PASSWORD})
    with Workspace(data) as ws:
        assert ws.secrets.get("db_password") == PASSWORD
    assert not (data / ".secrets.key").exists()
    moved = config_dir / "secrets.key"
    assert moved.read_bytes() == key and _mode(moved) == 0o600


def test_a_second_old_data_dir_is_re_encrypted_with_the_existing_key(tmp_path, config_dir):
    """One key per user: a data directory migrated after another one gets its file re-encrypted
    with the key already in the config dir, and its own old key is deleted."""
    first = tmp_path / "first"
    first_key = _old_version_store(first, {"db_password": PASSWORD})
    assert SecretStore(first).get("db_password") == PASSWORD
    second = tmp_path / "second"
    second_key = _old_version_store(second, {"api_token": TOKEN})
    assert second_key != first_key
    store = SecretStore(second)
    assert store.get("api_token") == TOKEN
    assert not (second / ".secrets.key").exists()
    assert (config_dir / "secrets.key").read_bytes() == first_key
    from cryptography.fernet import Fernet

    assert json.loads(Fernet(first_key).decrypt((second / "secrets.enc").read_bytes())) == {
        "api_token": TOKEN
    }


def test_an_encrypted_file_without_its_key_is_one_line(tmp_path, config_dir):
    data = tmp_path / "data"
    _old_version_store(data, {"db_password": PASSWORD})
    (data / ".secrets.key").unlink()  # copied without its key: the config dir's key cannot open it
    SecretStore(tmp_path / "other").set("x", "y-value", use_keyring=False)
    from engine.errors import SecretError

    with pytest.raises(SecretError) as err:
        SecretStore(data).get("db_password")
    assert "cannot be decrypted" in str(err.value) and "\n" not in str(err.value)


def test_an_unwritable_config_dir_is_one_line(tmp_path, monkeypatch):
    import os

    if os.geteuid() == 0:  # root writes anywhere: use a path below a file instead
        blocked = tmp_path / "a-file"
        blocked.write_text("")
        monkeypatch.setenv("AGGREGATOR_CONFIG", str(blocked / "config"))
    else:
        blocked = tmp_path / "ro"
        blocked.mkdir(mode=0o500)
        monkeypatch.setenv("AGGREGATOR_CONFIG", str(blocked / "config"))
    from engine.errors import SecretError

    with pytest.raises(SecretError) as err:
        SecretStore(tmp_path / "data").set("db_password", PASSWORD, use_keyring=False)
    assert "(the secrets key)" in str(err.value) and "\n" not in str(err.value)


def test_the_api_token_is_read_without_the_os_keyring(tmp_path):
    """The token lives in the encrypted file only: reading it never imports or asks the keyring
    (~50-100 ms on every CLI call next to a service)."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from engine.service import token; "
        f"t = token.ensure(Path({str(tmp_path / 'data')!r})); assert t == token.ensure(Path({str(tmp_path / 'data')!r})); "
        "print('keyring' in sys.modules)"
    )
    env = {**__import__("os").environ, "AGGREGATOR_CONFIG": str(tmp_path / "config")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    assert out.stdout.strip() == "False"
