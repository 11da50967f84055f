"""How `aggregator gui` picks its engine (app/gui.py `open_engine`), against a real service:
- `--attach URL` of a service with users and no token asks for a login (the GUI passes its login
  dialog as `login`); the window then drives the service as that user, with that user's role;
- a cancelled login is one line (exit 1), and nothing is opened;
- with users, a given token (`--token`, the service's own) is used without asking;
- with no service, the engine in this process is the OS user's checked view: admin, audited with
  source gui."""

from __future__ import annotations

import httpx
import pytest

from app.gui import LoginCancelled, open_engine
from engine.api.remote.client import AccessDenied
from tests.service.http_server import served_api

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with served_api(tmp_path_factory.mktemp("gui-open")) as server:
        made = server.client.post("/users", json={"name": "vera", "role": "viewer", "password": PASSWORD})
        assert made.status_code == 201, made.text
        yield server


def real_login(asked: list[str]):
    def login(url: str) -> dict:
        asked.append(url)
        answer = httpx.post(f"{url}/auth/login", json={"username": "vera", "password": PASSWORD}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    return login


def test_attach_to_a_service_with_users_asks_for_a_login_and_acts_as_that_user(api, monkeypatch):
    monkeypatch.delenv("AGGREGATOR_TOKEN", raising=False)
    asked: list[str] = []
    engine = open_engine(None, attach=api.url, login=real_login(asked))
    try:
        assert asked == [api.url]
        me = engine.users.me()
        assert me["user"] == "vera" and me["role"] == "viewer", me
        assert isinstance(engine.pipelines.list(), list)  # a viewer reads
        with pytest.raises(AccessDenied, match=r"users\.list needs the admin role; vera is viewer"):
            engine.users.list()  # and is refused what only an admin may do, by the service (403)
    finally:
        engine.close()


def test_a_cancelled_login_is_one_line(api, monkeypatch):
    monkeypatch.delenv("AGGREGATOR_TOKEN", raising=False)
    with pytest.raises(LoginCancelled) as caught:
        open_engine(None, attach=api.url, login=lambda url: None)
    assert str(caught.value) == f"--attach {api.url}: the login was cancelled"
    assert caught.value.exit_code == 1


def test_a_given_token_is_used_without_asking(api, monkeypatch):
    monkeypatch.delenv("AGGREGATOR_TOKEN", raising=False)
    asked: list[str] = []
    engine = open_engine(None, attach=api.url, token=api.token, login=real_login(asked))
    try:
        assert asked == []
        assert {u["name"] for u in engine.users.list()} >= {"vera"}  # the service's token acts as admin
    finally:
        engine.close()


def test_without_a_service_the_gui_is_the_os_user_as_admin_audited_as_gui(tmp_path):
    engine = open_engine(tmp_path / "data")
    try:
        assert engine.users.me()["role"] == "admin"
        engine.connectors.save("hist", "historian", "destination", {})
        entries = engine.audit.list(action="connectors.save")
        assert entries and entries[0]["source"] == "gui" and entries[0]["outcome"] == "ok", entries
    finally:
        engine.close()
