"""Users and roles as the clients (CLI, GUI, HTTP) see them, through the front door: who calls
(`Principal`), the errors of a refused call or login, the checked view (`GuardedEngine`), which
operations a role may call (`rules_for`), and the audit trail's CSV form. Light: no store opened."""

from __future__ import annotations

from engine.auth.audit import CSV_COLUMNS, to_csv
from engine.auth.guard import GuardedEngine
from engine.auth.permissions import PERMISSIONS, required_role, rules_for
from engine.auth.principal import ROLES, LoginFailed, PermissionDenied, Principal, local_admin
from engine.auth.users import MIN_PASSWORD_CHARS, check_password

__all__ = [
    "CSV_COLUMNS",
    "MIN_PASSWORD_CHARS",
    "PERMISSIONS",
    "ROLES",
    "GuardedEngine",
    "LoginFailed",
    "PermissionDenied",
    "Principal",
    "check_password",
    "local_admin",
    "required_role",
    "rules_for",
    "to_csv",
]
