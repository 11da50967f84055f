"""Short-lived access tokens: HS256 JWTs (PyJWT) signed with a key kept as a secret.

The key is the data directory's secret `aggregator-jwt-key` in its encrypted secret store (as the
API token is: engine/service/token.py), created on first use; never in a file of its own, a log or
an export. Claims: `sub` (user), `role` (as it was at login; the service takes the user's role of
now), `iat`, `exp`, `jti`, `iss`, `typ` "access". A token whose signature, issuer or type does not
match, or that has expired, is refused (LoginFailed: HTTP 401).
"""

from __future__ import annotations

import secrets as _random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from engine.auth.principal import LoginFailed
from engine.errors import SecretError
from engine.secrets import SecretStore

KEY_SECRET = "aggregator-jwt-key"
ISSUER = "aggregator"
ALGORITHM = "HS256"
ACCESS_TTL_S = 15 * 60
LEEWAY_S = 5  # clocks of one machine: a little slack for a token checked as it expires
_lock = threading.Lock()


def signing_key(data_dir: Path) -> str:
    """The data directory's signing key, created on first use (in the encrypted file only)."""
    store = SecretStore(Path(data_dir))
    with _lock:
        try:
            return store.get(KEY_SECRET, use_keyring=False)
        except SecretError as exc:
            if "is not set" not in str(exc):
                raise
        store.set(KEY_SECRET, _random.token_urlsafe(48), use_keyring=False)
        return store.get(KEY_SECRET, use_keyring=False)


def issue(key: str, user: str, role: str, ttl_s: int = ACCESS_TTL_S, now: float | None = None) -> str:
    import jwt

    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user,
        "role": role,
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": uuid.uuid4().hex,
        "iss": ISSUER,
        "typ": "access",
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(key: str, token: str) -> dict[str, Any]:
    """The claims of a valid access token; LoginFailed (one line, no token) otherwise."""
    import jwt

    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise LoginFailed("the access token has expired: log in again or refresh it") from None
    except jwt.InvalidTokenError:
        raise LoginFailed("the access token is not valid (wrong signature, issuer or form)") from None
    if claims.get("typ") != "access":
        raise LoginFailed("not an access token")
    return claims
