"""One service per data directory: an exclusive OS lock on `<data_dir>/service.lock`.

The lock is `fcntl.flock` (POSIX) or `msvcrt.locking` (Windows) on an open file, so the OS releases
it when the process ends, however it ends (a kill -9 leaves no stale lock). The file holds the
owner's PID; `service.json` beside it says where its API listens, so the CLI and the GUI can find a
running service (`owner(data_dir)`). `service.json` is removed on a clean exit; a leftover one from a
killed service is ignored, because `owner()` believes it only while the lock is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from engine.errors import AggregatorError

LOCK_FILE = "service.lock"
INFO_FILE = "service.json"


class DataDirLocked(AggregatorError):
    """Another process serves this data directory (exit 2: the command cannot be used as given)."""

    exit_code = 2


class ServiceLock:
    """The held lock; `release()` (or leaving the `with`) gives it back and removes `service.json`."""

    def __init__(self, data_dir: Path, handle):
        self.data_dir = data_dir
        self._handle = handle

    def publish(self, url: str) -> None:
        """Write `service.json` (pid and API URL), atomically."""
        info = self.data_dir / INFO_FILE
        tmp = info.with_name(f".{INFO_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}) + "\n", encoding="utf-8")
        os.replace(tmp, info)

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            (self.data_dir / INFO_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            _unlock(self._handle)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> ServiceLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(data_dir: Path | str) -> ServiceLock:
    """Take the data directory's lock, or raise DataDirLocked naming the PID that holds it."""
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the process's life
    if not _try_lock(handle):
        handle.close()
        pid = _read_pid(path)
        who = f"process {pid}" if pid else "another process"
        raise DataDirLocked(f"{data_dir} is already served by {who} (lock {path})")
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return ServiceLock(data_dir, handle)


def owner(data_dir: Path | str) -> tuple[int, str | None] | None:
    """(pid, API URL or None while it is starting) of the service that holds the lock, or None when
    no service runs on `data_dir`."""
    data_dir = Path(data_dir).expanduser()
    path = data_dir / LOCK_FILE
    if not path.exists():
        return None
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    try:
        if _try_lock(handle, shared=True):  # nobody holds it: no service
            _unlock(handle)
            return None
    finally:
        handle.close()
    pid = _read_pid(path)
    url = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        info = json.loads((data_dir / INFO_FILE).read_text(encoding="utf-8"))
        if info.get("pid") == pid:
            url = info.get("url")
    return (pid or 0, url)


def _read_pid(path: Path) -> int | None:
    # The holder writes its PID just after taking the lock: an empty file is a service starting.
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text(encoding="utf-8").split()[0])
    return None


if sys.platform == "win32":
    import msvcrt

    def _try_lock(handle, shared: bool = False) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle, shared: bool = False) -> bool:
        try:
            fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
