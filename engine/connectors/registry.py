"""Registry of connector types. Protocol packages register theirs through `register`."""

from __future__ import annotations

from engine.connectors.base import Connector, normalize_type

_TYPES: dict[str, type[Connector]] = {}
_loaded = False


def register(cls: type[Connector]) -> type[Connector]:
    _TYPES[normalize_type(cls.connector_type)] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import engine.connectors.duckdb_connector
        import engine.connectors.file
        import engine.connectors.historian_connector  # noqa: F401


def get(name: str) -> type[Connector] | None:
    _load_builtins()
    return _TYPES.get(normalize_type(name))


def names(role: str | None = None) -> list[str]:
    _load_builtins()
    return sorted(n for n, c in _TYPES.items() if role is None or role in c.roles())
