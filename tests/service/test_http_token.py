"""`aggregator token`: the API token is created on first use, kept as a secret (never in clear in
the data directory), and the same on every later call, in this process or another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.service import token
from tests.service.conftest import cli


def _cli(*args: str) -> subprocess.CompletedProcess:
    return cli(*args, timeout=60, env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})


def test_token_is_created_once_and_kept_as_a_secret(tmp_path):
    data = tmp_path / "data"
    first = _cli("token", "--data-dir", str(data))
    assert first.returncode == 0, first.stderr
    printed = first.stdout.strip()
    assert len(printed) >= 43 and "\n" not in printed  # token_urlsafe(32): 43 characters
    again = _cli("token", "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == printed
    assert token.ensure(data) == printed  # the service reads the same one
    # stored encrypted: no file of the data directory holds it in clear
    assert (data / "secrets.enc").exists()
    for path in data.rglob("*"):
        if path.is_file():
            assert printed.encode() not in path.read_bytes(), path


def test_each_data_directory_has_its_own_token(tmp_path):
    one, two = token.ensure(tmp_path / "one"), token.ensure(tmp_path / "two")
    assert one != two
    assert token.ensure(tmp_path / "one") == one


def test_environment_overrides_the_stored_token(tmp_path, monkeypatch):
    stored = token.ensure(tmp_path)
    monkeypatch.setenv("AGGREGATOR_SECRET_AGGREGATOR_API_TOKEN", "a-token-from-the-environment")
    assert token.ensure(tmp_path) == "a-token-from-the-environment" != stored
    hint = token.path_hint(tmp_path)
    assert "secrets.enc" in hint and "AGGREGATOR_SECRET_AGGREGATOR_API_TOKEN" in hint
    assert stored not in hint


def test_processes_asking_at_once_get_the_same_token(tmp_path):
    data, go = tmp_path / "data", tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "from engine.service import token\n"
        "print(token.ensure(sys.argv[1]))\n"
    )
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    root = Path(__file__).resolve().parents[2]
    # imported first, then all released at once: they race for the first token
    warm = "import engine.service.token, engine.secrets, cryptography.fernet\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", warm + script, str(data), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        for _ in range(6)
    ]
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    tokens = {out.strip() for out, _ in outputs}
    assert len(tokens) == 1 and token.ensure(data) in tokens
