"""Where the data directory is by default, in a module that imports nothing heavy: the CLI asks it
before it knows whether a service owns the directory (then it needs no engine of its own)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """$AGGREGATOR_HOME, else the user's data folder (platformdirs)."""
    env = os.environ.get("AGGREGATOR_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("data-aggregator", appauthor=False))


# ---- the admin's security settings -----------------------------------------------------------
# Kept in the settings file (app/settings.py writes it; `aggregator settings set KEY VALUE`), read
# here without importing the app: the engine enforces them, and only the file's owner (the admin of
# this installation) can change them. `AGGREGATOR_<KEY>` environment variables override the file,
# as for every setting (the environment is the process owner's too).
SECURITY_KEYS = ("allowed_roots", "plugins_enabled", "tls_cert", "tls_key", "tls_cafile")


def settings_path() -> Path:
    """The settings file: $AGGREGATOR_SETTINGS, else settings.toml in the config folder."""
    env = os.environ.get("AGGREGATOR_SETTINGS")
    if env:
        return Path(env).expanduser()
    from engine.secrets import config_dir

    return config_dir() / "settings.toml"


_cache: dict[tuple, dict] = {}


def security_settings() -> dict:
    """{allowed_roots: [Path], plugins_enabled: bool, tls_cert/tls_key/tls_cafile: Path | None},
    from the settings file and the environment. Re-read when the file changes (cheap: one stat)."""
    path = settings_path()
    try:
        st = path.stat()
        stamp: tuple = (str(path), st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (str(path), None, None)
    env = tuple(os.environ.get("AGGREGATOR_" + k.upper()) for k in SECURITY_KEYS)
    key = (*stamp, *env)
    found = _cache.get(key)
    if found is None:
        found = _read_security(
            path if stamp[1] is not None else None, dict(zip(SECURITY_KEYS, env, strict=True))
        )
        _cache.clear()
        _cache[key] = found
    return found


def _read_security(path: Path | None, env: dict) -> dict:
    raw: dict = {}
    if path is not None:
        import tomllib

        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            raw = {}  # the settings page reports a broken file; the engine keeps the safe defaults
    roots = raw.get("allowed_roots") or []
    if env["allowed_roots"] is not None:
        roots = [r for r in env["allowed_roots"].split(os.pathsep) if r.strip()]
    enabled = raw.get("plugins_enabled", False)
    if env["plugins_enabled"] is not None:
        enabled = env["plugins_enabled"]
    out: dict = {
        "allowed_roots": [Path(str(r)).expanduser() for r in roots if isinstance(r, str) and r.strip()],
        "plugins_enabled": parse_bool(enabled),
    }
    for name in ("tls_cert", "tls_key", "tls_cafile"):
        value = env[name] if env[name] is not None else raw.get(name)
        out[name] = Path(value).expanduser() if isinstance(value, str) and value.strip() else None
    return out


def parse_bool(value: object) -> bool:
    """true/false as a setting says it: a TOML boolean, or text (1/0, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


_opened: list[Path] = []


def note_opened(data_dir: Path) -> None:
    """A data directory this process opened (engine/workspace.py): its files are an allowed root."""
    if data_dir not in _opened:
        _opened.append(data_dir)


def opened_data_dirs() -> list[Path]:
    return list(_opened)


# ---- TLS: where the service's self-signed certificate lives, and what a client trusts ----------
def self_signed_files() -> tuple[Path, Path]:
    """(certificate, key) of `aggregator serve --tls self-signed`, in the config folder (0600)."""
    from engine.secrets import config_dir

    folder = config_dir() / "tls"
    return folder / "self-signed.crt", folder / "self-signed.key"


def client_tls(url: str):
    """What an HTTPS client of the service trusts (httpx's `verify`): the CA file of the settings
    (`tls_cafile`, $AGGREGATOR_TLS_CAFILE), else the service's own certificate when it is on this
    machine (`tls_cert`, or the self-signed one), besides the system's CAs. True (the system's CAs)
    for anything else; plain http needs nothing."""
    if not url.lower().startswith("https:"):
        return True
    import ssl

    chosen = security_settings()
    trusted = [p for p in (chosen["tls_cafile"], chosen["tls_cert"], self_signed_files()[0]) if p]
    context = ssl.create_default_context()
    for path in trusted:
        if path.is_file():
            try:
                context.load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError) as exc:
                if path == chosen["tls_cafile"]:  # the admin's choice: say it cannot be used
                    raise ValueError(f"{path}: not a CA file (PEM) that can be trusted: {exc}") from None
        elif path == chosen["tls_cafile"]:
            raise ValueError(f"{path}: the trusted CA file (tls_cafile) does not exist")
    return context
