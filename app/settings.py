"""Application settings (architecture rule 9): a pydantic model with a `schema_version`, kept in a
TOML file in the platformdirs config location; `AGGREGATOR_<FIELD>` environment variables override
the file (AGGREGATOR_THEME=dark, AGGREGATOR_PREVIEW_ROWS=500...).

The file is flat, so it is written here by hand (the standard library reads TOML, not writes it),
atomically: a temporary file beside it is renamed over it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

    Settings = BaseModel  # for annotations: the class settings_model() builds

SCHEMA_VERSION = 1
ENV_PREFIX = "AGGREGATOR_"
LOCAL_ZONE = "local"  # the computer's own time zone (what a plant engineer expects by default)


SECURITY_FIELDS = ("allowed_roots", "plugins_enabled", "tls_cert", "tls_key", "tls_cafile")


@cache
def settings_model() -> type[BaseModel]:
    """The pydantic model of the file, built on first use: pydantic (~0.15 s of imports) loads only
    where settings are read, validated or written, not for every command's parser (`--help`).
    `app.settings.Settings` is this class too (module `__getattr__` below)."""
    from zoneinfo import available_timezones

    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class Settings(BaseModel):
        model_config = ConfigDict(extra="ignore")  # a newer file's unknown keys do not stop an older app

        schema_version: int = Field(SCHEMA_VERSION, description="format of this file")
        data_dir: str | None = Field(
            None,
            title="Data directory",
            description="where the metadata and the historian live (empty: the default)",
        )
        theme: Literal["light", "dark"] = Field("light", title="Theme", description="the window's colours")
        time_zone: str = Field(
            LOCAL_ZONE,
            title="Time zone",
            description="times are shown in it: an IANA name (Europe/Berlin), UTC, or 'local' for this computer's",
        )
        preview_rows: int = Field(
            200, ge=1, le=100_000, title="Preview rows", description="rows a node preview shows by default"
        )
        # Security (issue 14; docs/security.md). Set by the admin (`aggregator settings ...`), read by
        # the engine from this file (engine/datadir.py) without importing the app.
        allowed_roots: list[str] = Field(
            default_factory=list,
            title="Allowed folders",
            description="folders besides the data directory where a pipeline may read and write files",
        )
        plugins_enabled: bool = Field(
            False,
            title="Plugins enabled",
            description="python transforms and custom connectors may load code from the data directory's plugins/",
        )
        tls_cert: str | None = Field(None, title="TLS certificate", description="the API's certificate (PEM)")
        tls_key: str | None = Field(
            None, title="TLS key", description="the API certificate's private key (PEM)"
        )
        tls_cafile: str | None = Field(
            None,
            title="Trusted CA file",
            description="a client trusts the service's certificate if this CA (or certificate) signed it",
        )

        @field_validator("allowed_roots", mode="before")
        @classmethod
        def _roots_from_text(cls, value: Any) -> Any:
            # AGGREGATOR_ALLOWED_ROOTS=/srv/a:/srv/b, like PATH
            if isinstance(value, str):
                return [part for part in value.split(os.pathsep) if part.strip()]
            return value

        @field_validator("allowed_roots")
        @classmethod
        def _absolute_roots(cls, value: list[str]) -> list[str]:
            out = []
            for text in value:
                path = Path(text.strip()).expanduser()
                if not path.is_absolute():
                    raise ValueError(f"'{text}' is not an absolute folder path")
                if str(path) not in out:
                    out.append(str(path))
            return out

        @field_validator("tls_cert", "tls_key", "tls_cafile", mode="before")
        @classmethod
        def _blank_is_none(cls, value: Any) -> Any:
            if isinstance(value, str) and not value.strip():
                return None
            return value

        @field_validator("data_dir", mode="before")
        @classmethod
        def _blank_is_default(cls, value: Any) -> Any:
            # an emptied field in the settings page means "the default folder", not a folder named ""
            if isinstance(value, str) and not value.strip():
                return None
            return value.strip() if isinstance(value, str) else value

        @field_validator("time_zone")
        @classmethod
        def _known_zone(cls, value: str) -> str:
            value = value.strip()
            if value in ("UTC", LOCAL_ZONE):
                return value
            if value not in available_timezones():
                raise ValueError(
                    f"unknown time zone '{value}' (an IANA name such as Europe/Berlin, or 'local')"
                )
            return value

    return Settings


def __getattr__(name: str) -> Any:
    if name == "Settings":  # `from app.settings import Settings` builds the model then
        return settings_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SettingsError(ValueError):
    """A refused settings value, with the field it belongs to (the settings page shows the message
    under that field) and one line that says what is wrong and what is allowed."""

    def __init__(self, field: str, message: str):
        info = settings_model().model_fields.get(field)
        title = info.title if info is not None and info.title else field.replace("_", " ").capitalize()
        super().__init__(f"{title}: {message}")
        self.field = field
        self.message = message


def _first_error(exc: ValidationError) -> SettingsError:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error.get("loc") else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if error.get("type") == "literal_error":
        message = f"'{error.get('input')}' is not one of {error['ctx']['expected']}"
    return SettingsError(field, message)


def check_data_dir(value: str | None) -> None:
    """Raise SettingsError when `value` cannot be the data directory: it is a file, or it cannot be
    written (or created). Checked when the settings page saves, not on every load: a folder that is
    away for a while must not make the app forget the user's other settings."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise SettingsError("data_dir", f"{path} is a file, not a folder")
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        where = "cannot be written" if existing == path else f"cannot be created: {existing} is not writable"
        raise SettingsError("data_dir", f"{path} {where}")


def default_path() -> Path:
    env = os.environ.get(ENV_PREFIX + "SETTINGS")
    if env:
        return Path(env).expanduser()
    from engine.secrets import config_dir  # one config folder for the settings and the secret key

    return config_dir() / "settings.toml"


def to_toml(settings: Settings) -> str:
    """Flat TOML: strings, numbers, booleans and lists of strings; None is left out (TOML has no
    null), and so are the security settings while they are off (a settings page's Save writes no
    line about allowed folders or plugins the admin never set)."""
    lines = ["# Data Aggregator settings (written by the app; edit with care)"]
    for key, value in settings.model_dump().items():
        if value is None or (key in SECURITY_FIELDS and not value):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = json.dumps([str(v) for v in value], ensure_ascii=False)  # a TOML array of strings
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in settings_model().model_fields:
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
        return settings_model().model_json_schema()

    def read_file(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        import tomllib  # here, not for every command's parser

        try:
            return tomllib.loads(self.path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"settings {self.path}: {exc}") from None

    def load(self) -> Settings:
        """The file's values, overridden by AGGREGATOR_* environment variables."""
        return settings_model().model_validate({**self.read_file(), **env_overrides(self.env)})

    def overridden(self) -> list[str]:
        """Fields the environment sets (the settings page shows them as not editable)."""
        return sorted(env_overrides(self.env))

    def update(self, changes: Mapping[str, Any]) -> Settings:
        """Write `changes` over the file's values (the settings page's Save) and return the settings
        now in force. Fields the environment overrides keep the file's own value: a page showing
        AGGREGATOR_THEME=dark must not write "dark" into the file. Refused values raise
        SettingsError (field and one-line message) and leave the file as it was."""
        overridden = set(self.overridden())
        before = self.read_file()
        values = {**before, **{k: v for k, v in changes.items() if k not in overridden}}
        from pydantic import ValidationError

        try:
            model = settings_model().model_validate(values)
        except ValidationError as exc:
            raise _first_error(exc) from None
        if model.data_dir != before.get("data_dir"):  # a folder kept as it was is not checked again
            check_data_dir(model.data_dir)
        self.save(model)
        return self.load()

    def save(self, settings: Settings | Mapping[str, Any]) -> Path:
        cls = settings_model()
        model = settings if isinstance(settings, cls) else cls.model_validate(dict(settings))
        import tempfile

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


# ---- `aggregator settings`: the admin's command line for this file ------------------------------
def field_name(key: str) -> str:
    """`plugins.enabled` and `plugins-enabled` name the field `plugins_enabled`."""
    name = key.strip().replace(".", "_").replace("-", "_")
    fields = settings_model().model_fields
    if name not in fields or name == "schema_version":
        known = ", ".join(n for n in fields if n != "schema_version")
        raise SettingsError(name, f"unknown setting '{key}' (settings: {known})")
    return name


def add_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "settings", help="show or change the settings file (allowed folders, plugins, TLS...)"
    )
    action = sp.add_subparsers(dest="settings_command", required=True, metavar="ACTION")
    show = action.add_parser("show", help="every setting, and where the file is")
    show.add_argument("--json", action="store_true")
    get = action.add_parser("get", help="one setting's value")
    get.add_argument("key")
    setp = action.add_parser("set", help="set KEY to VALUE (`plugins.enabled true`; a list: A:B)")
    setp.add_argument("key")
    setp.add_argument("value")
    add = action.add_parser("add", help="add VALUE to a list setting (`allowed_roots /srv/exports`)")
    add.add_argument("key")
    add.add_argument("value")
    remove = action.add_parser("remove", help="remove VALUE from a list setting")
    remove.add_argument("key")
    remove.add_argument("value")
    unset = action.add_parser("unset", help="back to the default")
    unset.add_argument("key")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return os.pathsep.join(str(v) for v in value)
    return "" if value is None else str(value)


def cmd_settings(args: Any) -> int:
    """`aggregator settings show|get|set|add|remove|unset`. A refused value: one line, exit 2."""
    store = SettingsStore()
    what = args.settings_command
    try:
        if what == "show":
            current = store.load().model_dump()
            if args.json:
                print(
                    json.dumps(
                        {"path": str(store.path), "settings": current, "overridden": store.overridden()}
                    )
                )
                return 0
            print(f"# {store.path}")
            for key, value in current.items():
                note = "  (set by the environment)" if key in store.overridden() else ""
                print(f"{key} = {_shown(value)}{note}")
            return 0
        name = field_name(args.key)
        if what == "get":
            print(_shown(getattr(store.load(), name)))
            return 0
        if name in store.overridden():
            raise SettingsError(name, f"set by the environment (AGGREGATOR_{name.upper()}); change it there")
        if what == "unset":
            before = store.read_file()
            before.pop(name, None)
            store.save(settings_model().model_validate(before))
            return 0
        if what in ("add", "remove"):
            current = store.read_file().get(name) or []
            if getattr(settings_model().model_fields[name].annotation, "__origin__", None) is not list:
                raise SettingsError(name, "is not a list setting (use `set`)")
            if what == "add":
                value: Any = [*current, args.value]
            else:
                value = [v for v in current if Path(v) != Path(args.value).expanduser()]
        else:
            value = args.value
        store.update({name: value})
        return 0
    except SettingsError as exc:
        print(f"error: {store.path}: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
