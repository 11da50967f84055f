"""Registry of connector types. A connector module registers its classes through `register`.

Modules are imported by type name when a type is first asked for (`get`): the built-ins are listed
in `BUILTIN`, and a package names its own with `provide` (protocols/__init__.py). A run imports only
the connectors its spec names; `names()` (the catalog, the editor) imports them all. A package can
also `defer(loader)`: the loader runs when every type is wanted. `aggregator serve` answers
`/health` without importing any connector until a pipeline or the API needs one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.connectors.base import Connector


def normalize_type(name: str) -> str:
    # engine.connectors.base (and Polars with it) is imported when a type is asked for, not when a
    # command registers the protocols: `aggregator runs` next to a service never needs it.
    from engine.connectors.base import normalize_type as normalize

    return normalize(name)


_TYPES: dict[str, type[Connector]] = {}
_loaded = False
_deferred: list[Callable[[], None]] = []
_deferred_lock = threading.RLock()  # two first callers: the second waits until the first has loaded
_settled = True  # no loader waiting or running


def register(cls: type[Connector]) -> type[Connector]:
    _TYPES[normalize_type(cls.connector_type)] = cls
    return cls


def defer(loader: Callable[[], None]) -> None:
    """Run `loader` (it imports connector modules, which `register`) when the registry is first
    asked for its types."""
    global _settled
    with _deferred_lock:
        _deferred.append(loader)
        _settled = False


# Built-in connector types and the module that registers each: a run imports only the modules of
# the types its spec names (a CSV -> DuckDB run never imports psycopg, pika, nats or httpx).
# `names()` (the catalog, the editor, validation messages) imports them all.
BUILTIN: dict[str, str] = {
    "file": "engine.connectors.file",
    "duckdb": "engine.connectors.duckdb_connector",
    "historian": "engine.connectors.historian_connector",
    "postgresql": "engine.connectors.postgresql",
    "mysql": "engine.connectors.mysql",
    "sqlite": "engine.connectors.sqlite",
    "rest_api": "engine.connectors.rest_api",
    "webhook": "engine.connectors.webhook",
    "nats": "engine.connectors.nats_upstream",
    "rabbitmq": "engine.connectors.amqp",
    "amqp": "engine.connectors.amqp",
    "redis_streams": "engine.connectors.redis_streams",
    "kafka": "engine.connectors.kafka",
    "aws_s3": "engine.connectors.s3",
    "custom": "engine.connectors.custom",
}
_provided: dict[str, str] = {}  # type name -> module, from packages (`provide`)


def provide(modules: dict[str, str]) -> None:
    """A package's connector types (normalized names: `opc_ua`) and the module that registers each,
    imported when one of those types is first asked for (protocols/__init__.py)."""
    _provided.update(modules)  # names as the registry keeps them (normalized): naming them imports nothing


def _import_for(name: str) -> None:
    module = BUILTIN.get(name) or _provided.get(name)
    if module is not None and name not in _TYPES:
        import importlib

        importlib.import_module(module)


def _load_builtins() -> None:
    """Every connector type: the built-ins, the provided modules and the deferred loaders."""
    global _loaded, _settled
    if not _loaded:
        import importlib

        for module in dict.fromkeys([*BUILTIN.values(), *_provided.values()]):
            importlib.import_module(module)
        _loaded = True
    if not _settled:
        with _deferred_lock:  # held while loading: a thread asking meanwhile waits, then sees them all
            while _deferred:
                loader = _deferred.pop(0)
                try:
                    loader()
                except BaseException:
                    _deferred.insert(0, loader)  # a broken protocol stays reported, not skipped
                    raise
            _settled = True


def get(name: str) -> type[Connector] | None:
    """The connector class of a type name; imports only the module that registers it when the
    name is known, else everything (a plugin or a deferred package may register it)."""
    key = normalize_type(name)
    if key not in _TYPES:
        _import_for(key)
    if key not in _TYPES:
        _load_builtins()
    return _TYPES.get(key)


def names(role: str | None = None) -> list[str]:
    _load_builtins()
    return sorted(n for n, c in _TYPES.items() if role is None or role in c.roles())
