"""Registry of transformation types: the single list the spec validator, executor and GUI read."""

from __future__ import annotations

from engine.transforms.base import Transform

_TYPES: dict[str, type[Transform]] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(cls: type[Transform]) -> type[Transform]:
    _TYPES[cls.type] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = cls.type
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import engine.transforms.catalog  # noqa: F401  (registers every built-in type)


def canonical(type_name: str) -> str | None:
    _load_builtins()
    if type_name in _TYPES:
        return type_name
    return _ALIASES.get(type_name)


def get(type_name: str) -> type[Transform]:
    name = canonical(type_name)
    if name is None:
        raise KeyError(type_name)
    return _TYPES[name]


def names() -> list[str]:
    _load_builtins()
    return sorted([*_TYPES, *_ALIASES])


def all_types() -> dict[str, type[Transform]]:
    _load_builtins()
    return dict(_TYPES)
