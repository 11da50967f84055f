"""`GuardedEngine`: an EngineAPI view bound to a `Principal`; every call is checked against the
permission table (engine/auth/permissions.py), and changes and denials go to the audit trail.

It is the engine's front door for a user: the HTTP API builds one per request for the caller
(service token: admin; a user's access token: that user's role), the CLI and the GUI with the
engine in their own process use one for the local OS user (admin), and a client of a service talks
to a service that does. So the rule is one table, applied in one place, whichever client calls.

Calls between the engine's own parts go to the raw sub-APIs, never through a view: a rerun is one
audited `runs.rerun`, not a rerun and a start.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from engine.auth.permissions import AUDITED, SELF, required_role
from engine.auth.principal import PermissionDenied, Principal
from engine.errors import error_line

SUB_APIS = ("pipelines", "runs", "connectors", "live", "data", "health", "alerts", "outbox", "users", "audit")
PASS_THROUGH = frozenset({"data_dir", "state", "call", "running_jobs", "warm_up", "url"})
TARGET_ARGS = ("path", "name", "run_id", "job_id", "alert_id", "spec_path", "pipeline", "value")


class GuardedEngine:
    """`engine` as `principal` may use it. `audit` (an object with `record(action, principal,
    **fields)`) receives changes and denials; None where another process audits (a RemoteEngine:
    the service does). `owns`: closing the view closes the engine (a CLI's own engine)."""

    def __init__(self, engine: Any, principal: Principal, audit: Any = None, *, owns: bool = False):
        self._engine = engine
        self.principal = principal
        self._audit = audit
        self._owns = owns
        for name in SUB_APIS:
            target = getattr(engine, name, None)
            if target is not None:
                setattr(self, name, GuardedAPI(name, target, self))

    def __getattr__(self, name: str) -> Any:
        if name in PASS_THROUGH:
            return getattr(self._engine, name)
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}' (not part of EngineAPI)")

    @property
    def engine(self) -> Any:
        """The engine behind the view (for the process that composed it, never for a client)."""
        return self._engine

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        self.check("engine.subscribe")
        return self._engine.subscribe(callback)

    def may(self, operation: str) -> bool:
        need = required_role(operation)
        return need is None or self.principal.may(need)

    def check(self, operation: str, target: Any = None) -> None:
        """PermissionDenied (audited) when the principal's role may not do `operation`."""
        need = required_role(operation)
        if need is None or self.principal.may(need):
            return
        if operation in SELF and target is not None and target == self.principal.user:
            return
        denied = PermissionDenied(operation, self.principal, need)
        self.record(operation, target=target, outcome="denied", reason=denied.one_line())
        raise denied

    def record(self, action: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.record(action, self.principal, **fields)

    def close(self, timeout: float = 10.0) -> None:
        if self._owns:
            self._engine.close(timeout)

    def __enter__(self) -> GuardedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GuardedAPI:
    """One sub-API of a `GuardedEngine`: its methods, checked (and audited when they change)."""

    def __init__(self, name: str, target: Any, owner: GuardedEngine):
        self._name = name
        self._target = target
        self._owner = owner

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        operation = f"{self._name}.{method}"
        attr = getattr(self._target, method)
        if not callable(attr):
            self._owner.check(operation)
            return attr
        owner = self._owner

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if operation == "users.me":
                return owner.principal.to_dict()
            if operation not in AUDITED and owner.may(operation):  # a read allowed: the quick way
                return attr(*args, **kwargs)
            arguments = _arguments(attr, args, kwargs)
            target = _target(operation, arguments)
            owner.check(operation, target)
            if operation not in AUDITED:
                return attr(*args, **kwargs)
            detail = _detail_before(owner.engine, operation, arguments)
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                owner.record(
                    operation, target=target, outcome="failed", reason=error_line(exc), detail=detail
                )
                raise
            if result is False and operation.split(".")[1].startswith("delete"):  # nothing was there
                owner.record(operation, target=target, outcome="failed", reason="not found", detail=detail)
                return result
            owner.record(
                operation,
                target=target,
                outcome="ok",
                detail=_detail_after(operation, arguments, result, detail),
            )
            return result

        guarded.__name__ = method
        guarded.__doc__ = getattr(attr, "__doc__", None)
        return guarded


def _arguments(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    try:
        return dict(inspect.signature(fn).bind_partial(*args, **kwargs).arguments)
    except (TypeError, ValueError):  # the call itself will say what is wrong
        return dict(kwargs)


def _target(operation: str, arguments: dict[str, Any]) -> Any:
    if operation in ("runs.start", "runs.preview"):
        doc = arguments.get("doc")
        name = doc.get("name") if isinstance(doc, dict) else None
        return str(arguments.get("spec_path") or name or "") or None
    if operation.startswith("outbox.quarantine"):
        return f"{arguments.get('pipeline')}/{arguments.get('destination')}"
    if operation == "connectors.set_secret":
        return arguments.get("name")  # never the value
    for key in TARGET_ARGS:
        if arguments.get(key) is not None:
            return str(arguments[key])
    return None


def _detail_before(engine: Any, operation: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
    """What the audit entry says about a change, taken before it is made (a spec's diff needs the
    document as it was). Never a secret value: secrets by name only."""
    from engine.auth.audit import spec_diff

    try:
        if operation == "pipelines.save":
            old = _document_on_disk(engine, arguments["path"])
            return {"diff": spec_diff(old, arguments.get("doc"))}
        if operation == "connectors.save":
            name = arguments.get("previous_name") or arguments.get("name")
            old = (engine.connectors.get(name) or {}).get("config") or {}
            return {
                "connector_type": arguments.get("connector_type"),
                "diff": spec_diff(old, arguments.get("config") or {}),
            }
        if operation == "users.set_role":
            return {"role": arguments.get("role")}
        if operation == "users.add":
            return {"role": arguments.get("role")}
        if operation == "alerts.acknowledge":
            return {"note": arguments.get("note")}
        if operation == "outbox.quarantine_retry" or operation == "outbox.quarantine_delete":
            return {"ids": arguments.get("ids")}
    except Exception as exc:  # the audit must not keep a change from being made
        return {"detail_error": error_line(exc)}
    return None


def _document_on_disk(engine: Any, path: Any) -> Any:
    """The document a save replaces, as its file has it ({} for a new file)."""
    import json
    from pathlib import Path

    file = Path(path)
    if not file.is_absolute():
        file = engine.pipelines.folder() / file
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _detail_after(operation: str, arguments: dict[str, Any], result: Any, before: Any) -> Any:
    detail = dict(before or {})
    if operation == "pipelines.save" and isinstance(result, int):
        detail["version"] = result
    elif operation == "users.set_role" and isinstance(result, dict):
        detail["previous_role"] = result.get("previous_role")
    elif operation == "connectors.set_secret":
        detail["stored_in"] = result
    elif operation in ("runs.start", "runs.rerun") and getattr(result, "id", None):
        detail["job"] = result.id
        if arguments.get("trigger"):
            detail["trigger"] = arguments["trigger"]
    elif operation == "runs.stop":
        detail["stopped"] = bool(result)
    return detail or None
