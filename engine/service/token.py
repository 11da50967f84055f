"""The service's API token: one bearer token per data directory (users and roles come later).

It is created on first use (`secrets.token_urlsafe(32)`) and kept as a secret, never in a config
file: in the data directory's encrypted secret store (`secrets.enc`, its key in the configuration
folder), under the fixed name `TOKEN_SECRET`. The encrypted file, not the OS keyring, because the
keyring is per user while a token belongs to one data directory (two services on one machine have
two tokens). `AGGREGATOR_SECRET_AGGREGATOR_API_TOKEN` in the environment overrides it (containers).
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
import threading
from collections.abc import Iterator
from pathlib import Path

from engine.errors import SecretError
from engine.secrets import SecretStore, _env_name, config_dir, restrict_to_owner

TOKEN_SECRET = "aggregator-api-token"
TOKEN_BYTES = 32
LOCK_FILE = ".api-token.lock"
_lock = threading.Lock()


def ensure(data_dir: Path | str) -> str:
    """The data directory's API token, created and stored on first use. Two processes asking at
    once (a first `serve` and `aggregator token`) get the same one: creating it holds a lock file."""
    data_dir = Path(data_dir).expanduser()
    store = SecretStore(data_dir)
    with _lock, _exclusive(data_dir):
        try:
            return store.get(TOKEN_SECRET, use_keyring=False)  # stored in the file only (above)
        except SecretError as exc:
            if "is not set" not in str(exc):
                raise  # a store that cannot be read: creating a new token would hide that
        token = _random.token_urlsafe(TOKEN_BYTES)
        store.set(TOKEN_SECRET, token, use_keyring=False)
        return store.get(TOKEN_SECRET, use_keyring=False)  # read back: remembered for masking; one winner


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """An exclusive lock between processes on `<data dir>/.api-token.lock` (POSIX; elsewhere the
    in-process lock only)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    restrict_to_owner(data_dir)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def path_hint(data_dir: Path | str) -> str:
    """Where the token lives, in words for a person (never the token itself)."""
    data_dir = Path(data_dir).expanduser()
    return (
        f"secret '{TOKEN_SECRET}' in {data_dir / 'secrets.enc'} (key in {config_dir() / 'secrets.key'});"
        f" `aggregator token --data-dir {data_dir}` prints it, {_env_name(TOKEN_SECRET)} overrides it"
    )
