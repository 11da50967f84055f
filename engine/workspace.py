"""A data directory: metadata store, historian, plugins and secrets, opened together."""

from __future__ import annotations

from pathlib import Path

from engine.datadir import default_data_dir, note_opened
from engine.secrets import SecretStore, restrict_to_owner
from engine.store.historian import Historian
from engine.store.metadata import MetadataStore


class Workspace:
    def __init__(self, data_dir: Path | str | None = None):
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        restrict_to_owner(self.data_dir)  # 0700: plugins, secrets and runs are the owner's only
        note_opened(self.data_dir)  # a spec may name files in it (engine/spec/paths_policy.py)
        (self.data_dir / "plugins").mkdir(exist_ok=True)
        self.metadata = MetadataStore(self.data_dir / "metadata.db")
        self.historian = Historian(self.data_dir / "historian.duckdb")
        self.secrets = SecretStore(self.data_dir)
        # Runs left `running` by a process that is gone become `interrupted`; their temporary
        # files and stage tables are removed (engine/recovery.py).
        from engine.recovery import recover

        self.recovered = recover(self)

    def close(self) -> None:
        self.historian.close()
        self.metadata.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
