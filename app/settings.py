"""Application settings (architecture rule 9): a pydantic model with a `schema_version`, kept in a
TOML file in the platformdirs config location; `AGGREGATOR_<FIELD>` environment variables override
the file (AGGREGATOR_THEME=dark, AGGREGATOR_PREVIEW_ROWS=500...).

The file is flat, so it is written here by hand (the standard library reads TOML, not writes it),
atomically: a temporary file beside it is renamed over it.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1
ENV_PREFIX = "AGGREGATOR_"


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a newer file's unknown keys do not stop an older app

    schema_version: int = Field(SCHEMA_VERSION, description="format of this file")
    data_dir: str | None = Field(
        None, description="where the metadata and the historian live (empty: the default)"
    )
    theme: Literal["light", "dark"] = Field("light", description="the window's colours")
    time_zone: str = Field("UTC", description="IANA name (Europe/Berlin); times are shown in it")
    preview_rows: int = Field(200, ge=1, le=100_000, description="rows a node preview shows by default")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != "UTC" and value not in available_timezones():
            raise ValueError(f"unknown time zone '{value}' (an IANA name such as Europe/Berlin)")
        return value


def default_path() -> Path:
    env = os.environ.get(ENV_PREFIX + "SETTINGS")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("data-aggregator", appauthor=False)) / "settings.toml"


def to_toml(settings: Settings) -> str:
    """Flat TOML: strings and numbers; None is left out (TOML has no null)."""
    lines = ["# Data Aggregator settings (written by the app; edit with care)"]
    for key, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and name != "schema_version":
            out[name] = value
    return out


class SettingsStore:
    """Load and save the settings file. `load()` never fails on a missing file (defaults)."""

    def __init__(self, path: Path | str | None = None, env: Mapping[str, str] | None = None):
        self.path = Path(path) if path else default_path()
        self.env = os.environ if env is None else env

    def schema(self) -> dict[str, Any]:
        return Settings.model_json_schema()

    def read_file(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            return tomllib.loads(self.path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"settings {self.path}: {exc}") from None

    def load(self) -> Settings:
        """The file's values, overridden by AGGREGATOR_* environment variables."""
        return Settings.model_validate({**self.read_file(), **env_overrides(self.env)})

    def overridden(self) -> list[str]:
        """Fields the environment sets (the settings page shows them as not editable)."""
        return sorted(env_overrides(self.env))

    def save(self, settings: Settings | Mapping[str, Any]) -> Path:
        model = settings if isinstance(settings, Settings) else Settings.model_validate(dict(settings))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings.", suffix=".toml", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(to_toml(model))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path
