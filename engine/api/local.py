"""`LocalEngine`: the `EngineAPI` (engine/api/protocol.py) with the engine in this process.

One `EngineCore` (the engine's threads, jobs and event subscribers, and the data directory's
workspace) is shared by the sub-API objects, each in its own module:

    engine = LocalEngine(data_dir)
    engine.pipelines.list()                   # engine/api/pipelines.py
    job = engine.runs.start(doc, spec_path)   # engine/api/runs.py; job.result() is the run record
    engine.connectors.test(...)               # engine/api/connectors.py
    engine.live.tags()                        # engine/api/live.py
    engine.data.sql("SELECT ...")             # engine/api/data.py
    engine.health.summary()                   # engine/api/health.py
    engine.outbox.status()                    # engine/api/outbox.py
    engine.alerts.list()                      # engine/api/alerts.py
    engine.users.login(name, password)        # engine/api/users.py: users, logins (engine/auth/)
    engine.audit.list(); engine.audit.verify()  # the hash-chained audit trail
    engine.as_principal(principal)            # a view checked against the roles, audited
    engine.subscribe(callback)                # typed records of engine/api/events.py
"""

from __future__ import annotations

from pathlib import Path

from engine.api.alerts import LocalAlerts
from engine.api.connectors import LocalConnectors
from engine.api.core import ENGINE_NICE, EngineCore
from engine.api.data import LocalData
from engine.api.health import LocalHealth
from engine.api.live import LocalLive
from engine.api.outbox import LocalOutbox
from engine.api.pipelines import LocalPipelines
from engine.api.runs import LocalRuns
from engine.api.users import LocalAudit, LocalUsers, retention_days
from engine.auth.audit import AuditLog
from engine.auth.guard import GuardedEngine
from engine.auth.principal import Principal
from engine.auth.users import UserStore
from engine.workspace import default_data_dir

__all__ = ["LocalEngine", "default_data_dir"]


class LocalEngine(EngineCore):
    """The engine in this process, behind the EngineAPI calls. It owns the data directory's
    stores while it is open; `close()` ends its jobs and closes them."""

    def __init__(self, data_dir: Path | str | None = None, workers: int = 4, nice: int = ENGINE_NICE):
        super().__init__(data_dir, workers, nice)
        self.pipelines = LocalPipelines(self)
        self.runs = LocalRuns(self)
        self.connectors = LocalConnectors(self)
        self.live = LocalLive(self)
        self.data = LocalData(self)
        self.health = LocalHealth(self)
        self.outbox = LocalOutbox(self.data_dir, self)  # engine/api/outbox.py
        self.alerts = LocalAlerts(self)  # engine/api/alerts.py: evaluates error_handling.alerts
        # Users and the audit trail live in metadata.db too, each on a connection of its own.
        self._audit_log = AuditLog(self.data_dir / "metadata.db", retention_days())
        self._user_store = UserStore(self.data_dir / "metadata.db")
        self.users = LocalUsers(self.data_dir, self._user_store, self._audit_log)
        self.audit = LocalAudit(self._audit_log)

    def as_principal(self, principal: Principal, *, owns: bool = False) -> GuardedEngine:
        """This engine as `principal` may use it: every call checked against the roles, changes
        and denials audited (engine/auth/guard.py). `owns`: closing the view closes the engine."""
        return GuardedEngine(self, principal, self.audit, owns=owns)

    def close(self, timeout: float = 10.0) -> None:
        # A historian read of the live API may be running on the pool: it must end before DuckDB closes.
        self.live.wait_idle(timeout)
        self.alerts.close()  # before the outboxes stop: a one-shot run's notifications go out first
        self.outbox.stop(timeout)  # forwarders end their delivery in flight; the outboxes keep the rest
        super().close(timeout)
        self._user_store.close()
        self._audit_log.close()

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
