"""The one permission table: each EngineAPI operation (`sub_api.method`) and the least role that
may call it. Roles are ordered (viewer < editor < admin), so a rule names one role.

- viewer: reads pipelines, runs, tags, dashboards, alerts and the historian's tables;
- editor: also creates, edits, runs and deletes pipelines and connectors, tests connections,
  previews, exports, and acknowledges alerts;
- admin: also manages users, secrets, the outbox (quarantine, edge id) and reads the audit trail.

An operation that is not in the table needs admin (closed by default); tests/auth checks that every
method of every sub-API Protocol has a rule. `OPEN` operations need no principal at all (a login).
`SELF` operations are allowed to anyone on their own user (changing one's own password).
`AUDITED` operations are changes: each call is written to the audit trail with its outcome.
"""

from __future__ import annotations

VIEWER, EDITOR, ADMIN = "viewer", "editor", "admin"

PERMISSIONS: dict[str, str] = {
    # pipelines
    "pipelines.list": VIEWER,
    "pipelines.read": VIEWER,
    "pipelines.open": VIEWER,
    "pipelines.validate": VIEWER,
    "pipelines.load": VIEWER,
    "pipelines.node_types": VIEWER,
    "pipelines.transformations": VIEWER,
    "pipelines.templates": VIEWER,
    "pipelines.folder": VIEWER,
    "pipelines.save": EDITOR,
    "pipelines.delete": EDITOR,
    "pipelines.install_demo": EDITOR,
    # runs
    "runs.list": VIEWER,
    "runs.pipeline_names": VIEWER,
    "runs.overview": VIEWER,
    "runs.nodes": VIEWER,
    "runs.detail": VIEWER,
    "runs.jobs": VIEWER,
    "runs.preview": EDITOR,  # reads the sources a spec names
    "runs.start": EDITOR,
    "runs.stop": EDITOR,
    "runs.rerun": EDITOR,
    # connectors and secrets
    "connectors.types": VIEWER,
    "connectors.schema": VIEWER,
    "connectors.list": VIEWER,
    "connectors.get": VIEWER,
    "connectors.check": VIEWER,
    "connectors.secret_names": EDITOR,  # an editor names secrets in configs
    "connectors.check_secret": EDITOR,
    "connectors.save": EDITOR,
    "connectors.delete": EDITOR,
    "connectors.test": EDITOR,
    "connectors.browse_opcua": EDITOR,
    "connectors.set_secret": ADMIN,
    "connectors.delete_secret": ADMIN,
    # live tags and the historian
    "live.tags": VIEWER,
    "live.window": VIEWER,
    "live.windows": VIEWER,
    "live.history": VIEWER,
    "live.last_values": VIEWER,
    "live.chart_series": VIEWER,
    "live.throughput": VIEWER,
    "data.objects": VIEWER,
    "data.preview_object": VIEWER,
    "data.sql": VIEWER,  # read-only statements only (engine/api/data.py)
    "data.export_frame": EDITOR,  # writes a file
    "data.export_object": VIEWER,  # over HTTP a download; the service picks the file
    # health and dashboards
    "health.status": VIEWER,
    "health.summary": VIEWER,
    "health.recent_runs": VIEWER,
    "health.source_sessions": VIEWER,
    "health.active_streams": VIEWER,
    "health.pipeline_stats": VIEWER,
    "health.pipeline_performance": VIEWER,
    "health.alerts": VIEWER,
    "health.top_pipelines": VIEWER,
    "health.pipeline_trends": VIEWER,
    # alerts
    "alerts.list": VIEWER,
    "alerts.get": VIEWER,
    "alerts.counts": VIEWER,
    "alerts.notifications": VIEWER,
    "alerts.acknowledge": EDITOR,
    # the outbox
    "outbox.status": VIEWER,
    "outbox.quarantine": VIEWER,
    "outbox.quarantine_records": VIEWER,
    "outbox.edge_id": VIEWER,
    "outbox.quarantine_retry": ADMIN,
    "outbox.quarantine_delete": ADMIN,
    "outbox.set_edge_id": ADMIN,
    "outbox.start": ADMIN,
    "outbox.stop": ADMIN,
    # users and the audit trail
    "users.me": VIEWER,
    "users.list": ADMIN,
    "users.add": ADMIN,
    "users.set_role": ADMIN,
    "users.set_password": ADMIN,  # or SELF: one's own
    "users.delete": ADMIN,
    "audit.list": ADMIN,
    "audit.verify": ADMIN,
    # the engine itself
    "engine.subscribe": VIEWER,
}

OPEN = frozenset({"users.login", "users.refresh", "users.authenticate", "users.has_users"})
SELF = frozenset({"users.set_password"})
AUDITED = frozenset(
    {
        "pipelines.save",
        "pipelines.delete",
        "pipelines.install_demo",
        "runs.start",
        "runs.stop",
        "runs.rerun",
        "connectors.save",
        "connectors.delete",
        "connectors.set_secret",
        "connectors.delete_secret",
        "data.export_frame",
        "data.export_object",
        "alerts.acknowledge",
        "outbox.quarantine_retry",
        "outbox.quarantine_delete",
        "outbox.set_edge_id",
        "outbox.start",
        "outbox.stop",
        "users.add",
        "users.set_role",
        "users.set_password",
        "users.delete",
    }
)


def required_role(operation: str) -> str | None:
    """The least role for `operation`; None for an open one; admin for one without a rule."""
    if operation in OPEN:
        return None
    return PERMISSIONS.get(operation, ADMIN)


def rules_for(role: str) -> dict[str, bool]:
    """Every operation with whether `role` may call it (the GUI greys out what it may not)."""
    from engine.auth.principal import role_rank

    return {op: role_rank(role) >= role_rank(need) for op, need in PERMISSIONS.items()}
