"""EngineAPI: the outbox calls (`engine.outbox`, OutboxAPI in engine/api/protocol.py).

Per remote destination (pipeline + destination node): the status figures (`status()`), the
quarantine (list, export, retry, delete), the box's edge id, and the service's start/stop of the
forwarders. Plain data in and out (dicts, lists, ints), so that HTTP routes and a GUI page are thin.

`LocalOutbox(data_dir)` works on the outbox files directly (SQLite: safe next to a running
service, whose forwarders see a retried record within a second), so the CLI needs no engine of its
own; `LocalEngine` builds it with its core, which also lets the service rebuild the destination of
a pipeline that has pending records but is not running (from its stored version).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import DataError


class LocalOutbox:
    def __init__(self, data_dir: Path | str, core: Any = None):
        self._data_dir = Path(data_dir)
        self._core = core
        if core is None:  # a reader beside a possible service: never set a file aside under it
            self._manager.repair = False

    @property
    def _manager(self):
        from engine.outbox.manager import manager_for

        return manager_for(self._data_dir)

    # ---- figures -----------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per destination: pending_records, pending_bytes, appended_records (all ever accepted),
        forwarded_records, dropped_records, quarantined_records, oldest_pending_age_s, link_state
        (idle, connecting, up, down, stopped), link_detail, cursor, forwarder, corrupt_set_aside."""
        return self._manager.status()

    def _store(self, pipeline: str, destination: str):
        if (pipeline, destination) not in self._manager.destinations():
            known = ", ".join(f"{p}/{d}" for p, d in self._manager.destinations()) or "none"
            raise DataError(
                f"no outbox for destination '{destination}' of pipeline '{pipeline}' (outboxes: {known})"
            )
        return self._manager.store(pipeline, destination)

    # ---- quarantine --------------------------------------------------------------------------
    def quarantine(self, pipeline: str | None = None, destination: str | None = None) -> list[dict[str, Any]]:
        """Quarantined entries (id, pipeline, destination, created_at, reason, tries, records, bytes)."""
        out = []
        for p, d in self._manager.destinations():
            if (pipeline is None or p == pipeline) and (destination is None or d == destination):
                for entry in self._manager.store(p, d).quarantine_list():
                    out.append({"pipeline": p, "destination": d, **entry})
        return out

    def quarantine_records(
        self, pipeline: str, destination: str, ids: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """The quarantined records themselves (JSON-ready; each with quarantine_id and reason)."""
        return self._store(pipeline, destination).quarantine_records(ids)

    def quarantine_retry(self, pipeline: str, destination: str, ids: list[int] | None = None) -> int:
        """Put the records back in the outbox (same keys); returns how many."""
        return self._store(pipeline, destination).quarantine_retry(ids)

    def quarantine_delete(self, pipeline: str, destination: str, ids: list[int] | None = None) -> int:
        return self._store(pipeline, destination).quarantine_delete(ids)

    # ---- the box -----------------------------------------------------------------------------
    def edge_id(self) -> str:
        from engine.outbox.keys import edge_id

        return edge_id(self._data_dir)

    def set_edge_id(self, value: str) -> str:
        """Set the box's id (part of every idempotency key: set it before the first delivery)."""
        from engine.outbox.keys import set_edge_id

        try:
            return set_edge_id(self._data_dir, value)
        except ValueError as exc:
            raise DataError(str(exc)) from None

    # ---- the service -------------------------------------------------------------------------
    def start(self) -> None:
        """The service starts: pipelines default to store_and_forward, and every destination with
        pending records gets its forwarder."""
        self._manager.start(self._resolve if self._core is not None else None)

    def stop(self, timeout: float = 10.0) -> None:
        import sys

        if "engine.outbox.manager" not in sys.modules:  # no outbox was opened: nothing to stop
            return
        self._manager.stop(timeout)

    def _resolve(self, pipeline: str, destination: str):
        """The destination of a stored pipeline, to forward what it left pending."""
        from engine.context import RunContext
        from engine.spec.validate import validate

        ws = self._core.workspace
        doc = ws.metadata.pipeline_spec(pipeline)
        if doc is None:
            return None
        plan = validate(doc, check_schemas=False)
        cls = plan.connector(destination)
        if not hasattr(cls, "make_target"):
            return None
        config = plan.config(destination, ws.secrets.get)
        ctx = RunContext(pipeline=pipeline, data_dir=ws.data_dir, secret=ws.secrets.get, historian=None)
        return (lambda: cls.make_target(config, ctx, destination), config)
