"""Who calls the engine: a `Principal`, and the errors of a refused call or login."""

from __future__ import annotations

import getpass
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import AggregatorError

ROLES = ("viewer", "editor", "admin")  # each role may do what the ones before it may
SOURCES = ("cli", "gui", "api", "service")


def role_rank(role: str) -> int:
    return ROLES.index(role)


def check_role(role: str, where: str = "role") -> str:
    if role not in ROLES:
        raise AggregatorError(f"{where}: '{role}' is not a role (allowed: {', '.join(ROLES)})")
    return role


@dataclass(frozen=True)
class Principal:
    """The user a call is made for: `user`, its `role`, where the call comes from (`source`: cli,
    gui, api, service) and the client's address when it came over the network."""

    user: str
    role: str
    source: str = "cli"
    client: str | None = None

    def may(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_admin(source: str = "cli") -> Principal:
    """A CLI or GUI with the engine in its own process acts as the OS user who runs it, as admin:
    that user owns the data directory (0700) and could open its files anyway."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        user = "local"
    return Principal(user, "admin", source)


class PermissionDenied(AggregatorError, PermissionError):
    """A role may not do this: one line naming the operation, the role and the role it needs."""

    exit_code = 3

    def __init__(self, operation: str, principal: Principal, needed: str):
        self.operation = operation
        self.needed = needed
        super().__init__(
            f"permission denied: {operation} needs the {needed} role; {principal.user} is {principal.role}"
        )


class LoginFailed(AggregatorError):
    """A login, refresh or token that is not accepted (HTTP 401). The line never says which of
    user name or password was wrong."""

    exit_code = 3
