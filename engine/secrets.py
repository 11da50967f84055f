"""Secrets by name (architecture rule 10): never in a spec, a config file, a log or an export.

Lookup order: the environment (`AGGREGATOR_SECRET_<NAME>`, for containers and CI), the OS keyring,
then an encrypted file in the data directory for headless machines without a keyring.

The encrypted file's key is not beside it: it lives in the configuration directory
(`$AGGREGATOR_CONFIG`, else the platform's user config folder), as `secrets.key`, mode 0600, in a
folder of mode 0700, so a copy of the data directory (or a read of it) does not carry the key. A key
left in the data directory by an older version (`.secrets.key`) moves there at first use.

Every value this process resolves is remembered, and `mask(text)` replaces each one with `***`:
errors and log lines are masked where they leave the engine (the run record and log lines as
stored, the command line's error output, and every logging record through `install_log_masking`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import threading
from pathlib import Path

from engine.errors import SecretError

SERVICE = "data-aggregator"
KEY_FILE = "secrets.key"
LEGACY_KEY_FILE = ".secrets.key"  # where older versions kept the key: in the data directory
MASK = "***"
MIN_MASKED = 4  # shorter values would mask ordinary text ("1", "on"); do not use them as secrets


def _env_name(name: str) -> str:
    return "AGGREGATOR_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def config_dir() -> Path:
    """The configuration directory: `$AGGREGATOR_CONFIG`, else the platform's user config folder."""
    env = os.environ.get("AGGREGATOR_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("data-aggregator", appauthor=False))


def restrict_to_owner(folder: Path) -> None:
    """Create `folder` if needed and make it 0700 (POSIX; elsewhere the user profile's ACLs apply)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name != "posix":
        return
    try:
        if folder.stat().st_uid == os.geteuid() and stat.S_IMODE(folder.stat().st_mode) != 0o700:
            folder.chmod(0o700)
    except OSError:
        pass  # a folder we may use but not change (a mount): its owner decides


def protected_paths(data_dir: Path) -> set[Path]:
    """The secret store's files (its key, and the encrypted file): no pipeline reads or writes them."""
    paths = {config_dir() / KEY_FILE, data_dir / "secrets.enc", data_dir / LEGACY_KEY_FILE}
    return {real_path(p) for p in paths}


def real_path(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def is_protected(path: Path, data_dir: Path) -> bool:
    """Whether `path` is one of the secret store's files (symbolic links followed)."""
    return real_path(path) in protected_paths(data_dir)


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (symbolic links followed)."""
    return real_path(path).is_relative_to(real_path(folder))


# ---- masking ------------------------------------------------------------------------------------
_resolved: set[str] = set()
_masked_forms: list[str] = []  # every form a value takes in text, longest first
_lock = threading.Lock()


def remember(value: str) -> None:
    """Note a resolved secret value, so that `mask` hides it from then on."""
    if not isinstance(value, str) or len(value) < MIN_MASKED or value in _resolved:
        return
    with _lock:
        _resolved.add(value)
        _masked_forms[:] = sorted(set(_masked_forms) | _forms(value), key=len, reverse=True)
    install_log_masking()


def _forms(value: str) -> set[str]:
    """The value as written, inside a JSON string or a Python repr, URL-encoded (a query parameter,
    a form body) and in base64 at each of its three alignments inside a longer text (a basic-auth
    header `user:password` that a server echoes back): the part of the base64 text that depends on
    the value alone, so that what is left around the mask cannot give the value back."""
    import base64
    from urllib.parse import quote, quote_plus

    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
    forms |= {quote(value, safe=""), quote(value), quote_plus(value)}
    raw = value.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + raw).decode().rstrip("=")
            core = text[4 if shift else 0 : -4]
            if len(core) >= 8:  # shorter cores would match ordinary base64 text by chance
                forms.add(core)
    return forms


def mask(text: str) -> str:
    """`text` with every secret value resolved in this process replaced by `***`."""
    if not _masked_forms or not isinstance(text, str):
        return text
    for form in _masked_forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


class MaskingFilter(logging.Filter):
    """Masks secret values in a log record's message (and its formatted exception)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _mask_record(record)
        return True


def _mask_record(record: logging.LogRecord) -> None:
    if not _masked_forms or getattr(record, "_secrets_masked", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports that itself
        return
    masked = mask(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask(record.exc_text)
    record._secrets_masked = True  # type: ignore[attr-defined]


_installed = False


def install_log_masking() -> None:
    """Mask every log record of this process: a `MaskingFilter` on the root logger and its handlers,
    and a record factory for records of other loggers (a logger's own filters see only the records
    logged on it, not those propagated from its children). Installed once, on first use."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        root = logging.getLogger()
        mask_filter = MaskingFilter()
        root.addFilter(mask_filter)
        for handler in root.handlers:
            handler.addFilter(mask_filter)
        make_record = logging.getLogRecordFactory()

        def masked_record(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            _mask_record(record)
            return record

        logging.setLogRecordFactory(masked_record)
        _installed = True


# ---- the store ------------------------------------------------------------------------------------
class SecretStore:
    def __init__(self, data_dir: Path, config: Path | None = None):
        self.file = data_dir / "secrets.enc"
        self.config_dir = config if config is not None else config_dir()
        self.key_file = self.config_dir / KEY_FILE
        self.legacy_key_file = data_dir / LEGACY_KEY_FILE
        if self.legacy_key_file.exists():
            # A failure here is reported when a secret is next read from or written to the file.
            with contextlib.suppress(OSError, SecretError):
                self._migrate_key()

    def get(self, name: str, *, use_keyring: bool = True) -> str:
        """The environment's value, else the OS keyring's (unless `use_keyring` is false: a secret
        that is only ever stored in the file, like the API token, skips the keyring's ~50-100 ms
        import and look-up), else the encrypted file's."""
        value = os.environ.get(_env_name(name))
        if value is None and use_keyring:
            value = self._keyring_get(name)
        if value is None:
            value = self._file_values().get(name)
        if value is None:
            raise SecretError(
                f"secret '{name}' is not set (set {_env_name(name)}, or store it with `aggregator secret set {name}`)"
            )
        remember(value)
        return value

    def set(self, name: str, value: str, *, use_keyring: bool = True) -> str:
        if use_keyring and self._keyring_set(name, value):
            return "keyring"
        values = self._file_values()
        values[name] = value
        self._write_values(values, self._fernet())
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

        try:
            if self.legacy_key_file.exists():
                self._migrate_key()
            if not self.key_file.exists():
                with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                    self._write_key(Fernet.generate_key())
            return Fernet(self.key_file.read_bytes().strip())
        except OSError as exc:
            where = exc.filename or self.key_file
            raise SecretError(f"{where}: {exc.strerror or exc} (the secrets key)") from None
        except ValueError:  # not a Fernet key
            raise SecretError(f"{self.key_file}: not a valid secrets key") from None

    def _write_key(self, key: bytes) -> None:
        """The key file, created 0600 (never world-readable, not even for an instant)."""
        restrict_to_owner(self.config_dir)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())

    def _migrate_key(self) -> None:
        """Move the data directory's old key to the config directory. If that already holds a key
        (another data directory got there first), the encrypted file is re-encrypted with it."""
        from cryptography.fernet import Fernet

        old_key = self.legacy_key_file.read_bytes().strip()
        if not self.key_file.exists():
            # A copy, then the old one is deleted (not a rename: the two folders may be on two disks).
            with contextlib.suppress(FileExistsError):
                self._write_key(old_key)
        new_key = self.key_file.read_bytes().strip()
        if new_key != old_key and self.file.exists():
            values = self._decrypt(Fernet(old_key), self.legacy_key_file)
            self._write_values(values, Fernet(new_key))
        self.legacy_key_file.unlink(missing_ok=True)

    def _write_values(self, values: dict[str, str], fernet) -> None:
        restrict_to_owner(self.file.parent)
        token = fernet.encrypt(json.dumps(values).encode())
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(token)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.file)

    def _decrypt(self, fernet, key_file: Path) -> dict[str, str]:
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(fernet.decrypt(self.file.read_bytes()))
        except InvalidToken:
            raise SecretError(
                f"{self.file}: cannot be decrypted with the key in {key_file}"
                " (was the data directory copied from another account or machine?)"
            ) from None

    def _file_values(self) -> dict[str, str]:
        if not self.file.exists():
            return {}
        return self._decrypt(self._fernet(), self.key_file)

    def delete(self, name: str) -> bool:
        """Remove a stored secret (keyring and encrypted file); False when neither held it. A value
        from the environment (AGGREGATOR_SECRET_*) is the environment's: it stays."""
        removed = False
        with contextlib.suppress(Exception):  # no usable keyring back end on this machine
            import keyring

            if keyring.get_password(SERVICE, name) is not None:
                keyring.delete_password(SERVICE, name)
                removed = True
        values = self._file_values()
        if name in values:
            del values[name]
            self._write_values(values, self._fernet())
            removed = True
        return removed
