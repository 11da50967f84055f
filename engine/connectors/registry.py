"""Registry of connector types. Protocol packages register theirs through `register`.

A package can also `defer(loader)`: the loader (which imports the modules that call `register`) runs
when the registry is first asked (`get`, `names`), not at start-up. `aggregator serve` answers
`/health` without importing a protocol's connector until a pipeline or the API needs one.
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


def _load_builtins() -> None:
    global _loaded, _settled
    if not _loaded:
        _loaded = True
        import engine.connectors.amqp
        import engine.connectors.custom
        import engine.connectors.duckdb_connector
        import engine.connectors.file
        import engine.connectors.historian_connector
        import engine.connectors.kafka
        import engine.connectors.mysql
        import engine.connectors.nats_upstream
        import engine.connectors.postgresql
        import engine.connectors.redis_streams
        import engine.connectors.rest_api
        import engine.connectors.s3
        import engine.connectors.sqlite
        import engine.connectors.webhook  # noqa: F401
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
    _load_builtins()
    return _TYPES.get(normalize_type(name))


def names(role: str | None = None) -> list[str]:
    _load_builtins()
    return sorted(n for n, c in _TYPES.items() if role is None or role in c.roles())
