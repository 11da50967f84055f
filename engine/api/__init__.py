"""The engine's one front door (architecture: one front door).

`EngineAPI` (engine/api/protocol.py) is the typed interface every client uses: the CLI, the desktop
app and the service's HTTP routes. `LocalEngine(data_dir)` (engine/api/local.py) runs the engine in
this process; its sub-APIs (`pipelines`, `runs`, `connectors`, `live`, `data`, `health`) share one
`EngineCore`. Events are the typed records of engine/api/events.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.api.core import EngineCore, Event, Job
from engine.api.events import EngineEvent, event_from_dict
from engine.api.protocol import EngineAPI, RunFilter

if TYPE_CHECKING:
    from engine.api.local import LocalEngine


def __getattr__(name: str) -> Any:
    # LocalEngine is imported on first use: it loads the stores (Polars, DuckDB), which a client
    # of a running service (engine/api/connect.py, engine/api/remote/) never needs.
    if name == "LocalEngine":
        from engine.api.local import LocalEngine

        return LocalEngine
    raise AttributeError(f"module 'engine.api' has no attribute '{name}'")


__all__ = [
    "EngineAPI",
    "EngineCore",
    "EngineEvent",
    "Event",
    "Job",
    "LocalEngine",
    "RunFilter",
    "event_from_dict",
]
