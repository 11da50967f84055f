"""A full disk, said in one line wherever it happens (file, DuckDB, SQLite).

Each layer meets it in its own words: `OSError` ENOSPC (or EDQUOT, a quota) from a file write,
Polars' "No space left on device (os error 28)", DuckDB's `IOException` "Could not write file ...:
No space left on device", SQLite's "database or disk is full". `no_space(exc)` recognises them all
and `NoSpaceError` says it the same way: `no space left on device while writing <path>`.
A file larger than the process may write (RLIMIT_FSIZE, EFBIG) is reported alike, in its words.
`fsync_dir` makes a rename durable (the atomic commits of files: destinations, reject files).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.errors import ConnectorError

_NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_SPACE_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded", "os error 28")
_TOO_LARGE_TEXT = ("file too large", "os error 27")


class NoSpaceError(ConnectorError):
    """The disk (or the quota, or the file size limit) is full: worth retrying, the space may come back."""

    def __init__(self, path: Path | str, *, too_large: bool = False):
        self.path = str(path)
        self.too_large = too_large
        what = "file size limit reached" if too_large else "no space left on device"
        super().__init__(f"{what} while writing {path}")


def no_space(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) means the disk, a quota or the size limit is full."""
    return _kind(exc) is not None


def _kind(exc: BaseException | None) -> str | None:
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, NoSpaceError):
            return "too_large" if exc.too_large else "full"
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
            return "full"
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            return "too_large"
        text = str(exc).lower()
        if any(t in text for t in _NO_SPACE_TEXT):
            return "full"
        if any(t in text for t in _TOO_LARGE_TEXT):
            return "too_large"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def as_no_space(exc: BaseException, path: Path | str) -> NoSpaceError | None:
    """`exc` as a NoSpaceError about `path`, or None when it is something else."""
    kind = _kind(exc)
    if kind is None:
        return None
    if isinstance(exc, NoSpaceError):
        return exc
    return NoSpaceError(path, too_large=kind == "too_large")


def duckdb_no_space(exc: BaseException, path: Path | str) -> NoSpaceError | None:
    """A full disk while DuckDB wrote `path`, as a NoSpaceError marked `duckdb_file` (the runner
    gives the file's unused tail back to the file system); None for any other error."""
    full = as_no_space(exc, path)
    if full is not None:
        full.duckdb_file = Path(path)  # type: ignore[attr-defined]
    return full


def fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder entry too (best effort where it is not supported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
