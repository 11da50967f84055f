"""EngineAPI: the connectors calls (see engine/api/core.py).

Saved connector configurations live in the metadata store. Secrets never do: a field named like a
secret (password, token, secret...) must hold a `{"secret": NAME}` reference, whose value lives in
the secret store (keyring, or the encrypted file).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Any

from engine.api.core import EngineCore, Job
from engine.errors import ConnectorError
from engine.secrets import mask

SECRET_FIELD = re.compile(r"(^|_)(password|passwd|token|secret|api_key|secret_access_key)$", re.IGNORECASE)
ROLES = ("source", "destination")


def clear_secrets(config: Any, path: str = "") -> list[str]:
    """JSON paths of secret-named fields that hold a value in clear instead of a reference."""
    found: list[str] = []
    if secret_references(config) and isinstance(config, dict) and set(config) == {"secret"}:
        return found  # a reference is what a secret field should hold
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if SECRET_FIELD.search(str(key)) and isinstance(value, str) and value:
                found.append(where)
            else:
                found += clear_secrets(value, where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += clear_secrets(value, f"{path}[{i}]")
    return found


def secret_references(config: Any) -> set[str]:
    if isinstance(config, dict):
        if set(config) == {"secret"} and isinstance(config["secret"], str):
            return {config["secret"]}
        return set().union(*(secret_references(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(secret_references(v) for v in config)) if config else set()
    return set()


class LocalConnectors:
    """The connectors part of the in-process engine (`engine.connectors`)."""

    def __init__(self, core: EngineCore):
        self._core = core

    # ---- types -------------------------------------------------------------------------------
    def types(self) -> list[dict[str, Any]]:
        """Every registered connector type with its roles and config schemas (cheap, no I/O)."""
        from engine.connectors import registry

        return [registry.get(n).describe() for n in registry.names()]

    def schema(self, connector_type: str, role: str) -> dict[str, Any]:
        cls = self._connector_class(connector_type)
        model = cls.SourceConfig if role == "source" else cls.SinkConfig
        if model is None:
            raise ConnectorError(
                f"connector '{connector_type}' cannot be a {role} (roles: {', '.join(cls.roles())})"
            )
        return model.model_json_schema()

    # ---- saved configurations ----------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Saved connectors: name, connector_type, role, config, updated_at."""
        return self._core.workspace.metadata.connectors()

    def get(self, name: str) -> dict[str, Any] | None:
        return self._core.workspace.metadata.connector(name)

    def check(self, connector_type: str, role: str, config: dict[str, Any]) -> list[dict[str, str]]:
        """What is wrong with a config, without any I/O: `[{"path", "message"}]` with paths relative
        to the config (`endpoint`, `devices[0].tags[1].address`), as the spec validator words them,
        so a form can mark each field. Secret references count as filled in."""
        from engine.spec.paths_policy import check_endpoint as check_files
        from engine.spec.validate import check_endpoint

        issues = check_endpoint({"connector_type": connector_type, "config": config}, role, "")
        issues += check_files(connector_type, role, config)  # allowed folders, plugins enabled
        out = [
            {"path": path, "message": "a secret in clear: store it as a secret and pick its name"}
            for path in clear_secrets(config)
        ]
        for issue in issues:
            path = issue.path.removeprefix(".").removeprefix("config").removeprefix(".")
            message = f"{issue.message} (allowed: {issue.allowed})" if issue.allowed else issue.message
            out.append({"path": path, "message": message})
        return out

    def save(
        self,
        name: str,
        connector_type: str,
        role: str,
        config: dict[str, Any],
        previous_name: str | None = None,
    ) -> dict[str, Any]:
        """Store (or replace) a saved connector. Refuses secrets in clear and unknown types/roles.
        `previous_name` is the name it was saved under when the user renamed it: that row goes, so a
        rename never leaves the old copy behind."""
        name = name.strip()
        if not name:
            raise ConnectorError("a saved connector needs a name")
        if role not in ROLES:
            raise ConnectorError(f"connector '{name}': role '{role}' (allowed: {', '.join(ROLES)})")
        self.schema(connector_type, role)  # the type exists and has this role
        clear = clear_secrets(config)
        if clear:
            raise ConnectorError(
                f"connector '{name}': {', '.join(clear)} holds a secret in clear;"
                ' store it as a secret and refer to it as {"secret": NAME}'
            )
        self._core.workspace.metadata.save_connector(name, connector_type, role, config)
        if previous_name and previous_name != name:
            self._core.workspace.metadata.delete_connector(previous_name)
        self._core.emit({"event": "connectors_changed", "name": name})
        return self._core.workspace.metadata.connector(name) or {}

    def delete(self, name: str) -> bool:
        deleted = self._core.workspace.metadata.delete_connector(name)
        self._core.emit({"event": "connectors_changed", "name": name})
        return deleted

    # ---- secrets -----------------------------------------------------------------------------
    def secret_names(self) -> list[str]:
        """Names a config can refer to: stored through the app, in the encrypted file, in the
        environment (AGGREGATOR_SECRET_*), or referenced by a saved connector."""
        names = set(self._core.workspace.metadata.secret_names())
        with contextlib.suppress(Exception):  # an unreadable file must not hide the rest
            names |= set(self._core.workspace.secrets._file_values())  # SecretStore has no public names()
        prefix = "AGGREGATOR_SECRET_"
        names |= {k[len(prefix) :].lower() for k in os.environ if k.startswith(prefix)}
        for row in self.list():
            names |= secret_references(row["config"])
        return sorted(names)

    def set_secret(self, name: str, value: str, use_keyring: bool = True) -> str:
        """Store a secret's value (keyring, else the encrypted file); returns where it went."""
        where = self._core.workspace.secrets.set(name, value, use_keyring=use_keyring)
        self._core.workspace.metadata.note_secret_name(name)
        return where

    def check_secret(self, name: str) -> None:
        """SecretError (saying where it was looked for) when the secret has no value."""
        self._core.workspace.secrets.get(name)

    def delete_secret(self, name: str) -> bool:
        """Remove a stored secret's value and forget its name; False when none was stored (a value
        from the environment stays: it is the environment's)."""
        removed = self._core.workspace.secrets.delete(name)
        self._core.workspace.metadata.forget_secret_name(name)
        return removed

    # ---- test connection ---------------------------------------------------------------------
    def test(self, connector_type: str, role: str, config: dict[str, Any], name: str = "test") -> Job:
        """Check a connector in the background. The job's result is `{"ok", "error", "detail",
        "seconds"}` (a failed check is a result, not an exception; `detail` is the one line a
        connector may say of what answered: a server's version, the login's permissions); a
        `connection_tested` event follows."""

        def work(cancel) -> dict[str, Any]:
            started = time.monotonic()
            try:
                said = self._check(connector_type, role, config, name, cancel)
                detail = " ".join(said.split()) if isinstance(said, str) and said.strip() else None
                result = {"ok": True, "error": None, "detail": mask(detail) if detail else None}
            except Exception as exc:  # the badge shows whatever went wrong, in one line
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                result = {"ok": False, "error": mask(text), "detail": None}  # no secret value
            result["seconds"] = round(time.monotonic() - started, 3)
            self._core.emit({"event": "connection_tested", "name": name, **result})
            return result

        return self._core.submit("test_connection", work)

    def _check(self, connector_type: str, role: str, config: dict[str, Any], name: str, cancel) -> str | None:
        from pydantic import ValidationError

        from engine.context import RunContext

        cls = self._connector_class(connector_type)
        model = cls.SourceConfig if role == "source" else cls.SinkConfig
        if model is None:
            raise ConnectorError(f"connector '{connector_type}' cannot be a {role}")
        from engine.spec.paths_policy import check_endpoint as check_files

        refused = check_files(connector_type, role, config, self._core.data_dir)
        if refused:  # a connection test opens no file outside the allowed folders
            raise ConnectorError(str(refused[0]).removeprefix(".").removeprefix("config."))
        ctx = RunContext(
            pipeline="test-connection",
            data_dir=self._core.data_dir,
            base_dir=self._core.data_dir,
            secret=self._core.workspace.secrets.get,
            historian=self._core.workspace.historian,
            cancel=cancel,
            dry_run=True,
        )
        try:
            parsed = model.model_validate(ctx.resolve_config(config))
        except ValidationError as exc:  # one line per field, as the spec validator words them
            raise ConnectorError(
                "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()
                )
            ) from None
        endpoint = (
            cls.make_source(parsed, ctx, name) if role == "source" else cls.make_sink(parsed, ctx, name)
        )
        return endpoint.check()

    # ---- OPC UA tag browser ------------------------------------------------------------------
    def browse_opcua(self, config: dict[str, Any], node_id: str | None = None) -> Job[list[dict[str, Any]]]:
        """The children of `node_id` (default: Objects) on the server of an OPC UA config, through
        the registered connector's `browse(config, node_id)` (the engine imports no protocol)."""

        def work(_cancel) -> list[dict[str, Any]]:
            from engine.context import RunContext

            cls = self._connector_class("opc_ua")
            browse = getattr(cls, "browse", None)
            if browse is None:
                raise ConnectorError("the opc_ua connector offers no browse(config, node_id)")
            ctx = RunContext(secret=self._core.workspace.secrets.get)
            # data_dir: certificates trusted on first use are pinned in its pki/ folder
            return browse(ctx.resolve_config(config), node_id, data_dir=self._core.data_dir)

        return self._core.submit("browse", work)

    @staticmethod
    def _connector_class(connector_type: str):
        from engine.connectors import registry

        cls = registry.get(connector_type)
        if cls is None:
            raise ConnectorError(
                f"unknown connector type '{connector_type}' (allowed: {', '.join(registry.names())})"
            )
        return cls
