"""Settings: TOML round trip, environment overrides, atomic writes, refused values."""

from __future__ import annotations

import tomllib

import pytest
from pydantic import ValidationError

from app.settings import SCHEMA_VERSION, Settings, SettingsStore, to_toml


def test_defaults_when_no_file(tmp_path):
    settings = SettingsStore(tmp_path / "none.toml", env={}).load()
    assert settings == Settings() and settings.schema_version == SCHEMA_VERSION


def test_round_trip_through_toml(tmp_path):
    store = SettingsStore(tmp_path / "cfg" / "settings.toml", env={})
    wanted = Settings(
        data_dir='C:\\plant "A"\\data', theme="dark", time_zone="Europe/Berlin", preview_rows=500
    )
    store.save(wanted)
    assert store.load() == wanted
    assert tomllib.loads(store.path.read_text())["theme"] == "dark"
    assert [p.name for p in store.path.parent.iterdir()] == ["settings.toml"]  # no temporary left


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "settings.toml"
    SettingsStore(path, env={}).save(Settings(theme="light", preview_rows=100))
    store = SettingsStore(path, env={"AGGREGATOR_THEME": "dark", "AGGREGATOR_PREVIEW_ROWS": "42"})
    assert (store.load().theme, store.load().preview_rows) == ("dark", 42)
    assert store.overridden() == ["preview_rows", "theme"]


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        Settings(time_zone="Mars/Olympus")
    with pytest.raises(ValidationError):
        Settings(theme="purple")
    path = tmp_path / "broken.toml"
    path.write_text("theme = ")
    with pytest.raises(ValueError, match=r"broken\.toml"):
        SettingsStore(path, env={}).load()


def test_none_is_left_out_of_the_file():
    assert "data_dir" not in to_toml(Settings())


def test_settings_live_in_the_config_folder_beside_the_secret_key(tmp_path, monkeypatch):
    from app.settings import default_path
    from engine.secrets import config_dir

    monkeypatch.delenv("AGGREGATOR_SETTINGS", raising=False)
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(tmp_path / "conf"))
    assert default_path() == tmp_path / "conf" / "settings.toml"
    assert default_path().parent == config_dir()
