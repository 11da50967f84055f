"""The same rules through the CLI next to a real `aggregator serve`: users made with the CLI (the
service's token acts as admin), `aggregator login` gives a user's access token, and with it in
$AGGREGATOR_TOKEN the CLI is that user: refused what the role may not do (exit 3, one line), and
every denial is in the audit trail, which `aggregator audit --verify` checks."""

from __future__ import annotations

import json

import pytest

from tests.service.http_server import served_api, service_env

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with served_api(tmp_path_factory.mktemp("cli-roles")) as server:
        yield server


def run(api, *args, token: str | None = None, stdin: str | None = None):
    """`aggregator ARGS` next to the service, as the service's token or as `token`'s user."""
    env = {**service_env(api.config_dir), **({"AGGREGATOR_TOKEN": token} if token else {})}
    import os
    import subprocess
    import sys

    from tests.service.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "app.cli", *map(str, args), "--data-dir", str(api.data_dir)],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip


def test_the_cli_obeys_the_same_roles_next_to_a_service(api):
    made = run(api, "users", "add", "vera", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "user 'vera' added as viewer"
    assert PASSWORD not in made.stdout + made.stderr
    logged = run(api, "login", "--user", "vera", "--password-stdin", stdin=PASSWORD + "\n")
    assert logged.returncode == 0, logged.stderr
    vera = logged.stdout.strip()
    assert vera.count(".") == 2 and "vera (viewer)" in logged.stderr
    # the editor over HTTP (the CLI's way was shown above): fewer processes, a quicker test
    assert (
        api.client.post("/users", json={"name": "ed", "role": "editor", "password": PASSWORD}).status_code
        == 201
    )
    ed = api.anonymous.post("/auth/login", json={"username": "ed", "password": PASSWORD}).json()[
        "access_token"
    ]

    listed = run(api, "users", "list", token=vera)
    assert listed.returncode == 3
    assert listed.stderr == "error: permission denied: users.list needs the admin role; vera is viewer\n"
    secret = run(api, "secret", "set", "CLI_PW", token=ed, stdin="cli-secret-value-9\n")
    assert secret.returncode == 3
    assert (
        secret.stderr
        == "error: permission denied: connectors.set_secret needs the admin role; ed is editor\n"
    )
    wrong = run(api, "login", "--user", "vera", "--password-stdin", stdin="not the password\n")
    assert (wrong.returncode, wrong.stderr) == (3, "error: login failed: wrong user name or password\n")

    audit = run(api, "audit", "--json", "--since", "2000-01-01")
    assert audit.returncode == 0, audit.stderr
    entries = json.loads(audit.stdout)
    denied = [(e["user"], e["action"], e["source"], e["client"]) for e in entries if e["outcome"] == "denied"]
    assert denied == [
        ("ed", "connectors.set_secret", "cli", "127.0.0.1"),
        ("vera", "users.list", "cli", "127.0.0.1"),
    ]
    logins = [(e["user"], e["outcome"]) for e in entries if e["action"] == "auth.login"]
    assert logins == [("vera", "failed"), ("ed", "ok"), ("vera", "ok")]
    assert [e["source"] for e in entries if e["action"] == "auth.login"] == ["cli", "api", "cli"]
    added = [(e["user"], e["target"]) for e in entries if e["action"] == "users.add"]
    assert added == [("service-token", "ed"), ("service-token", "vera")]
    assert [e["source"] for e in entries if e["action"] == "users.add"] == ["api", "cli"]
    assert "cli-secret-value-9" not in audit.stdout and PASSWORD not in audit.stdout
    verified = run(api, "audit", "--verify")
    assert verified.returncode == 0 and verified.stdout.startswith(
        f"audit trail intact: {len(entries)} entries"
    )


def test_a_remote_engine_renews_an_expired_access_token(api):
    """The GUI attached as a user outlives its 15-minute access token: on a 401 the RemoteEngine
    spends its refresh token for a new pair and sends the request again; without a valid refresh
    token the 401 is the caller's, in one line."""
    import time

    from engine.api.remote import RemoteEngine
    from engine.auth import tokens
    from engine.errors import AggregatorError
    from engine.secrets import SecretStore

    api.client.post("/users", json={"name": "rene", "role": "viewer", "password": PASSWORD})
    pair = api.anonymous.post("/auth/login", json={"username": "rene", "password": PASSWORD}).json()
    key = SecretStore(api.data_dir, config=api.config_dir).get(tokens.KEY_SECRET, use_keyring=False)
    expired = tokens.issue(key, "rene", "viewer", ttl_s=60, now=time.time() - 3600)
    with RemoteEngine(api.url, expired, refresh_token=pair["refresh_token"]) as engine:
        assert engine.users.me()["user"] == "rene"  # renewed on the way
        assert engine._client.token not in (expired, pair["access_token"])
    with (
        RemoteEngine(api.url, expired, refresh_token="not-a-refresh-token") as engine,
        pytest.raises(AggregatorError, match="the access token has expired"),
    ):
        engine.users.me()
