"""Secrets by name (architecture rule 10): never in a spec, a config file, a log or an export.

Lookup order: the environment (`AGGREGATOR_SECRET_<NAME>`, for containers and CI), the OS keyring,
then an encrypted file in the data directory for headless machines without a keyring.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.errors import SecretError

SERVICE = "data-aggregator"


def _env_name(name: str) -> str:
    return "AGGREGATOR_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class SecretStore:
    def __init__(self, data_dir: Path):
        self.file = data_dir / "secrets.enc"
        self.key_file = data_dir / ".secrets.key"

    def get(self, name: str) -> str:
        value = os.environ.get(_env_name(name))
        if value is not None:
            return value
        value = self._keyring_get(name)
        if value is not None:
            return value
        value = self._file_values().get(name)
        if value is not None:
            return value
        raise SecretError(
            f"secret '{name}' is not set (set {_env_name(name)}, or store it with `aggregator secret set {name}`)"
        )

    def set(self, name: str, value: str, *, use_keyring: bool = True) -> str:
        if use_keyring and self._keyring_set(name, value):
            return "keyring"
        values = self._file_values()
        values[name] = value
        self.file.parent.mkdir(parents=True, exist_ok=True)
        token = self._fernet().encrypt(json.dumps(values).encode())
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(token)
        os.replace(tmp, self.file)
        return "encrypted file"

    # ---- back ends ---------------------------------------------------------------------------
    def _keyring_get(self, name: str) -> str | None:
        try:
            import keyring

            return keyring.get_password(SERVICE, name)
        except Exception:  # no usable keyring back end on this machine
            return None

    def _keyring_set(self, name: str, value: str) -> bool:
        try:
            import keyring
            from keyring.backends import fail

            if isinstance(keyring.get_keyring(), fail.Keyring):
                return False
            keyring.set_password(SERVICE, name, value)
            return True
        except Exception:
            return False

    def _fernet(self):
        from cryptography.fernet import Fernet

        if not self.key_file.exists():
            self.key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        return Fernet(self.key_file.read_bytes())

    def _file_values(self) -> dict[str, str]:
        if not self.file.exists():
            return {}
        return json.loads(self._fernet().decrypt(self.file.read_bytes()))
