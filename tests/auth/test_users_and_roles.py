"""Users (argon2id, policy, lockout), tokens (JWT tamper/expiry, refresh rotation) and the
permission table enforced by the engine's front door (`LocalEngine.as_principal`), with the audit
entries each kind of action leaves."""

from __future__ import annotations

import inspect
import sqlite3
import time

import jwt
import pytest

from engine.api import LocalEngine
from engine.api import protocol as api_protocol
from engine.auth import LoginFailed, PermissionDenied, Principal
from engine.auth import tokens as jwt_tokens
from engine.auth.permissions import AUDITED, OPEN, PERMISSIONS, SELF
from engine.auth.users import LOCKOUT_S, MAX_FAILURES
from engine.errors import UsageError
from engine.examples import install_ecommerce_example

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def module_config(tmp_path_factory):
    return tmp_path_factory.mktemp("config")


@pytest.fixture(autouse=True)
def same_config(module_config, monkeypatch):
    """One engine for the module: its secrets key folder for every test (conftest gives each its own)."""
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(module_config))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, module_config):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGGREGATOR_CONFIG", str(module_config))
        mp.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        eng = LocalEngine(tmp_path_factory.mktemp("auth") / "data")
    for name, role in (("vera", "viewer"), ("ed", "editor"), ("ada", "admin")):
        eng.users.add(name, role, PASSWORD)
    yield eng
    eng.close()


def view(engine, name: str, role: str, source: str = "api"):
    return engine.as_principal(Principal(name, role, source, "10.1.2.3"))


# ---- the table -------------------------------------------------------------------------------
SUB_PROTOCOLS = {
    "pipelines": api_protocol.PipelinesAPI,
    "runs": api_protocol.RunsAPI,
    "connectors": api_protocol.ConnectorsAPI,
    "live": api_protocol.LiveAPI,
    "data": api_protocol.DataAPI,
    "health": api_protocol.HealthAPI,
    "outbox": api_protocol.OutboxAPI,
    "alerts": api_protocol.AlertsAPI,
    "users": api_protocol.UsersAPI,
    "audit": api_protocol.AuditAPI,
}


def test_every_operation_of_the_front_door_has_a_rule():
    missing = [
        f"{sub}.{name}"
        for sub, proto in SUB_PROTOCOLS.items()
        for name, member in vars(proto).items()
        if not name.startswith("_") and inspect.isfunction(member)
        if f"{sub}.{name}" not in PERMISSIONS and f"{sub}.{name}" not in OPEN
    ]
    assert missing == []
    assert set(PERMISSIONS) >= AUDITED and set(PERMISSIONS) >= SELF


# ---- users -----------------------------------------------------------------------------------
def test_passwords_are_argon2id_hashes_never_clear(engine):
    conn = sqlite3.connect(engine.data_dir / "metadata.db")
    stored = conn.execute("SELECT password_hash FROM users WHERE name = 'vera'").fetchone()[0]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert all("password" not in key for u in engine.users.list() for key in u)
    dump = "\n".join(conn.iterdump())
    assert PASSWORD not in dump


@pytest.mark.parametrize(
    ("name", "password", "says"),
    [
        ("bob", "short", "at least 10"),
        ("bobbybobby", "BobbyBobby", "user name"),
        ("b b", PASSWORD, "user name"),
    ],
)
def test_password_policy_and_names(engine, name, password, says):
    with pytest.raises(UsageError, match=says):
        engine.users.add(name, "viewer", password)


def test_lockout_after_five_failures_is_audited(engine):
    engine.users.add("lou", "viewer", PASSWORD)
    for _ in range(MAX_FAILURES):
        with pytest.raises(LoginFailed, match="wrong user name or password"):
            engine.users.login("lou", "not the password", client="10.9.9.9")
    with pytest.raises(LoginFailed, match="locked until"):
        engine.users.login("lou", PASSWORD)  # the right password does not open a locked account
    store = engine._user_store
    later = time.time() + LOCKOUT_S + 1
    user, _ = store.check_login("lou", PASSWORD, now=later)  # at least 5 minutes, then open again
    assert user["name"] == "lou"
    entries = engine.audit.list(user="lou")
    assert [e["action"] for e in entries if e["action"] == "auth.lockout"] == ["auth.lockout"]
    failed = [e for e in entries if e["action"] == "auth.login" and e["outcome"] == "failed"]
    assert len(failed) == MAX_FAILURES + 1  # five wrong passwords, then the right one while locked
    assert {e["client"] for e in failed} == {"10.9.9.9", None}


def test_login_tokens_refresh_rotation_and_reuse(engine):
    tokens = engine.users.login("ed", PASSWORD, client="127.0.0.1")
    assert set(tokens) >= {"access_token", "token_type", "expires_in", "refresh_token"}
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == jwt_tokens.ACCESS_TTL_S
    assert engine.users.authenticate(tokens["access_token"]) == Principal("ed", "editor", "api", None)
    renewed = engine.users.refresh(tokens["refresh_token"])
    assert renewed["refresh_token"] != tokens["refresh_token"]
    with pytest.raises(LoginFailed, match="used already"):
        engine.users.refresh(tokens["refresh_token"])  # replayed: the family is revoked...
    with pytest.raises(LoginFailed, match="not valid"):
        engine.users.refresh(renewed["refresh_token"])  # ...the token it had given too
    assert engine.audit.list(action="auth.refresh", outcome="failed")[1]["user"] == "ed"


def test_tampered_expired_and_foreign_tokens_are_refused(engine):
    good = engine.users.login("vera", PASSWORD)["access_token"]
    header, _payload, signature = good.split(".")
    forged_claims = jwt.decode(good, options={"verify_signature": False}) | {"role": "admin", "sub": "ada"}
    forged = jwt.encode(forged_claims, "not the key, but just as long as one!", algorithm="HS256")
    cases = {
        "tampered payload": f"{header}.{forged.split('.')[1]}.{signature}",
        "wrong key": forged,
        "alg none": jwt.encode(forged_claims, None, algorithm="none"),
        "garbage": "abc.def.ghi",
        "expired": jwt_tokens.issue(
            engine.users._signing_key(), "vera", "viewer", ttl_s=60, now=time.time() - 3600
        ),
    }
    for what, token in cases.items():
        with pytest.raises(LoginFailed) as caught:
            engine.users.authenticate(token)
        assert ("expired" in str(caught.value)) == (what == "expired"), what


def test_a_role_change_and_a_deletion_take_effect_at_once(engine):
    engine.users.add("rita", "editor", PASSWORD)
    token = engine.users.login("rita", PASSWORD)["access_token"]
    view(engine, "ada", "admin").users.set_role("rita", "viewer")
    assert engine.users.authenticate(token).role == "viewer"
    view(engine, "ada", "admin").users.delete("rita")
    with pytest.raises(LoginFailed, match="no longer exists"):
        engine.users.authenticate(token)


# ---- roles in the front door ----------------------------------------------------------------
def test_roles_are_checked_in_the_engine_and_denials_audited(engine):
    viewer, editor, admin = (
        view(engine, "vera", "viewer"),
        view(engine, "ed", "editor"),
        view(engine, "ada", "admin"),
    )
    assert viewer.pipelines.list() == engine.pipelines.list()  # viewers read
    with pytest.raises(
        PermissionDenied, match=r"permission denied: pipelines.save needs the editor role; vera is viewer"
    ):
        viewer.pipelines.save(engine.pipelines.folder() / "x.json", {"name": "x"})
    with pytest.raises(PermissionDenied, match=r"connectors\.set_secret needs the admin role"):
        editor.connectors.set_secret("DB_PW", "a-secret-value-1")
    with pytest.raises(PermissionDenied):
        editor.users.list()
    with pytest.raises(PermissionDenied):
        viewer.audit.list()
    assert admin.users.list()  # admin manages users
    assert viewer.users.me() == {"user": "vera", "role": "viewer", "source": "api", "client": "10.1.2.3"}
    denied = engine.audit.list(outcome="denied", limit=10)
    assert [(e["user"], e["action"]) for e in denied[:4]] == [
        ("vera", "audit.list"),
        ("ed", "users.list"),
        ("ed", "connectors.set_secret"),
        ("vera", "pipelines.save"),
    ]
    assert denied[0]["reason"].startswith("permission denied: audit.list needs the admin role")
    assert denied[0]["client"] == "10.1.2.3" and denied[0]["source"] == "api"
    # one's own password, whatever the role
    viewer.users.set_password("vera", PASSWORD + "!")
    with pytest.raises(PermissionDenied):
        viewer.users.set_password("ed", PASSWORD + "!")
    viewer.users.set_password("vera", PASSWORD)


def test_each_kind_of_change_is_audited_with_a_masked_diff(engine):
    editor, admin = view(engine, "ed", "editor", "gui"), view(engine, "ada", "admin", "cli")
    path = engine.pipelines.folder() / "audited.json"
    doc = {
        "name": "audited",
        "source": {"type": "file", "path": "in.csv"},
        "destination": {"type": "file", "path": "out.csv"},
    }
    editor.pipelines.save(path, doc)
    editor.pipelines.save(path, {**doc, "destination": {"type": "file", "path": "out2.csv"}})
    admin.connectors.set_secret("AUDIT_PW", "value-never-audited-42")
    editor.connectors.save("db", "postgresql", "source", {"host": "a", "password": {"secret": "AUDIT_PW"}})
    editor.connectors.save("db", "postgresql", "source", {"host": "b", "password": {"secret": "OTHER_PW"}})
    with pytest.raises(Exception, match="holds a secret in clear"):
        editor.connectors.save("db", "postgresql", "source", {"host": "b", "password": "clear-text-pw-77"})
    admin.users.add("newbie", "viewer", PASSWORD)
    admin.users.set_role("newbie", "editor")
    editor.pipelines.delete(path)
    by_action = {}
    for entry in engine.audit.list(outcome="ok", limit=50):
        by_action.setdefault(entry["action"], entry)  # the newest of each
    saved = [e for e in engine.audit.list(action="pipelines.save") if e["target"] == str(path)]
    assert saved[0]["detail"]["diff"] == [{"path": "$.destination.path", "old": "out.csv", "new": "out2.csv"}]
    assert saved[0]["source"] == "gui" and saved[0]["user"] == "ed" and saved[0]["outcome"] == "ok"
    assert by_action["connectors.set_secret"]["target"] == "AUDIT_PW"
    assert set(by_action["connectors.set_secret"]["detail"]) == {"stored_in"}
    conn_diff = by_action["connectors.save"]["detail"]["diff"]
    assert {"path": "$.host", "old": "a", "new": "b"} in conn_diff
    assert {"path": "$.password.secret", "old": "AUDIT_PW", "new": "OTHER_PW"} in conn_diff
    refused = engine.audit.list(action="connectors.save", outcome="failed", limit=1)[0]
    assert "holds a secret in clear" in refused["reason"] and refused["detail"]["diff"][0]["new"] == "***"
    assert by_action["users.set_role"]["detail"] == {"role": "editor", "previous_role": "viewer"}
    assert by_action["users.add"]["detail"] == {"role": "viewer"}
    assert by_action["pipelines.delete"]["target"] == str(path)
    text = str(engine.audit.list(limit=1000))
    assert "value-never-audited-42" not in text and "clear-text-pw-77" not in text and PASSWORD not in text
    assert engine.audit.verify()["ok"]


def test_runs_started_and_stopped_are_audited(engine):
    spec = install_ecommerce_example(engine.data_dir)
    editor = view(engine, "ed", "editor", "cli")
    job = editor.runs.start(editor.pipelines.load(spec)["document"], spec_path=spec)
    assert job.result(60)["status"] in ("success", "warning")  # the demo rejects some records on purpose
    assert editor.runs.stop("no-such-job") is False
    started = engine.audit.list(action="runs.start", limit=1)[0]
    assert started["target"] == str(spec) and started["detail"]["job"] == job.id
    stopped = engine.audit.list(action="runs.stop", limit=1)[0]
    assert (stopped["target"], stopped["detail"]) == ("no-such-job", {"stopped": False})
