"""Users, roles and the audit trail (issue 14).

- `principal.py`: who is calling (`Principal`), the three roles, `PermissionDenied`/`LoginFailed`.
- `permissions.py`: the one table mapping each EngineAPI operation to the least role allowed.
- `guard.py`: `GuardedEngine`, an EngineAPI view bound to a principal: every sub-API call is
  checked against the table, changes and denials are written to the audit trail. HTTP, the CLI next
  to a service and the GUI all reach the engine through such a view, so they obey one rule.
- `users.py`: local users (argon2id hashes, password policy, lockout) and refresh tokens.
- `tokens.py`: short-lived HS256 access tokens (PyJWT), signed with a key kept as a secret.
- `audit.py`: the append-only, hash-chained audit trail in metadata.db.
"""

from __future__ import annotations

from engine.auth.principal import ROLES, LoginFailed, PermissionDenied, Principal, local_admin

__all__ = ["ROLES", "LoginFailed", "PermissionDenied", "Principal", "local_admin"]
