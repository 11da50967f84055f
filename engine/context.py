"""What a node sees of the run it belongs to."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.historian import Historian


def _untracked(kind: str, location: str, name: str | None = None) -> Callable[[], None]:
    return lambda: None


def _no_secrets(name: str) -> str:
    from engine.errors import SecretError

    raise SecretError(f"secret '{name}' is not set (no secret store configured)")


@dataclass
class RunContext:
    """Shared by every node of one run. Cheap to build; tests make their own."""

    run_id: str = "local"
    pipeline: str = "pipeline"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    data_dir: Path = field(default_factory=Path.cwd)
    base_dir: Path = field(default_factory=Path.cwd)  # relative file paths resolve here (the spec's folder)
    secret: Callable[[str], str] = _no_secrets
    historian: Historian | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    dry_run: bool = False
    log: Callable[[str, str, str | None], None] = lambda level, msg, node=None: None
    # A destination calls `track(kind, location, name)` BEFORE it creates a temporary file (`file`,
    # its path) or a stage table (`duckdb_table`, the DuckDB file and the table), and the function it
    # gets back once the thing is gone (renamed onto its target, dropped, removed). What a killed
    # run still has recorded is removed by the next process that opens the data directory.
    track: Callable[..., Callable[[], None]] = _untracked
    # How a remote destination without its own `delivery` delivers (engine/outbox/sinks.py):
    # "store_and_forward" (real-time runs set it), "direct", or None: store_and_forward when the
    # service runs this process, else direct. `outbox`: the data directory's OutboxManager (None:
    # the process-wide one for `data_dir`).
    delivery_default: str | None = None
    outbox: Any = None

    @property
    def plugins_dir(self) -> Path:
        return self.data_dir / "plugins"

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def resolve_config(self, value: Any) -> Any:
        """Replace every `{"secret": NAME}` in a connector config with the secret's value."""
        if isinstance(value, dict):
            if set(value) == {"secret"} and isinstance(value["secret"], str):
                return self.secret(value["secret"])
            return {k: self.resolve_config(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve_config(v) for v in value]
        return value


@dataclass
class NodeContext:
    """A node's view: the run, its own id, and (for per-batch nodes) which source the batch came from."""

    run: RunContext
    node_id: str
    batch_source: str | None = None

    def __getattr__(self, name: str) -> Any:  # delegate run-level attributes
        return getattr(self.run, name)
