"""Registry of transformation types: the single list the spec validator, executor and GUI read.

Built-in types are registered by name (`BUILTIN`: type -> module) and their module is imported
only when a spec names the type (`canonical`, `get`); `names()` and `all_types()` (the catalog, the
editor's palette, the JSON schema, a message listing the allowed types) import them all. So a run
of a file chain imports the few modules it uses, not the time-series ones with numpy.
"""

from __future__ import annotations

from importlib import import_module

from engine.transforms.base import Transform

_PACKAGE = "engine.transforms."
BUILTIN: dict[str, str] = {
    "aggregation": "aggregate",
    "conditional": "conditional",
    "date_time": "datetime_ops",
    "deadband": "ts_deadband",
    "deduplicate": "reshape",
    "explode": "reshape",
    "field_addition": "fields",
    "field_calculation": "calculation",
    "field_mapping": "mapping",
    "field_removal": "fields",
    "field_validation": "validation",
    "hashing": "hashing",
    "join": "combine",
    "json_extract": "text",
    "lookup": "combine",
    "power_curve": "ts_power",
    "python": "code",
    "quality_check": "ts_quality",
    "rate_of_change": "timeseries",
    "record_filter": "filtering",
    "resample": "timeseries",
    "rolling": "timeseries",
    "schema_mapping": "fields",
    "sort": "reshape",
    "split": "filtering",
    "sql": "code",
    "union": "combine",
}
BUILTIN_ALIASES: dict[str, str] = {"field_operation": "field_mapping"}

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
        for module in sorted(set(BUILTIN.values())):
            import_module(_PACKAGE + module)


def canonical(type_name: str) -> str | None:
    if type_name in _TYPES:
        return type_name
    if type_name in _ALIASES:
        return _ALIASES[type_name]
    if type_name in BUILTIN:
        return type_name
    return BUILTIN_ALIASES.get(type_name)


def get(type_name: str) -> type[Transform]:
    name = canonical(type_name)
    if name is None:
        raise KeyError(type_name)
    if name not in _TYPES:
        import_module(_PACKAGE + BUILTIN[name])
    return _TYPES[name]


def names() -> list[str]:
    _load_builtins()
    return sorted([*_TYPES, *_ALIASES])


def all_types() -> dict[str, type[Transform]]:
    _load_builtins()
    return dict(_TYPES)
