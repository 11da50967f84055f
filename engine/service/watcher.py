"""Folders the service watches, through watchdog (inotify on Linux, a poller elsewhere):

- the pipelines folders: any change calls back once things are quiet for a moment (an editor's
  save is several events), so specs added, changed or deleted are picked up within a second or two;
- `file_arrival` globs: a file that appears (created, written, moved in) is handed over only once
  it has *settled*: its size and modification time unchanged for `settle_seconds`. A file still
  being copied keeps changing, so a half-copied file is never read. Files already there when the
  watch starts are not arrivals.

The events only say "look at this path"; the settle check is a poll of `os.stat` on the paths
seen, every `POLL_S`, on one thread of ours.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
POLL_S = 0.1
FOLDER_QUIET_S = 0.3  # a pipelines folder change is reported once nothing changed for this long


def split_glob(pattern: str) -> tuple[Path, str]:
    """(the folder to watch: the pattern's longest part without wildcards, the rest)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # no wildcard: one exact file
        return Path(*parts[:-1]) if len(parts) > 1 else Path("."), parts[-1]
    base = Path(*fixed) if fixed else Path(".")
    return base, str(Path(*parts[len(fixed) :]))


@dataclass
class _Arrivals:
    base: Path
    rest: str
    settle_s: float
    on_file: Callable[[Path], None]
    seen: dict[Path, tuple[int, int, float]] = field(default_factory=dict)  # size, mtime_ns, since

    def matches(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.base)
        except ValueError:
            return False
        if "/" not in self.rest and os.sep not in self.rest:
            return len(rel.parts) == 1 and fnmatch.fnmatchcase(rel.name, self.rest)
        rest = self.rest.replace("**/", "*").replace("**", "*")
        return fnmatch.fnmatchcase(str(rel), rest)


@dataclass
class _Folder:
    path: Path
    on_change: Callable[[], None]
    changed_at: float | None = None


class Watcher:
    """One watchdog observer for every watch of the service, plus the settle thread."""

    def __init__(self, poll_s: float = POLL_S):
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.daemon = True
        self._lock = threading.Lock()
        self._arrivals: dict[str, _Arrivals] = {}
        self._folders: dict[str, _Folder] = {}
        self._handles: dict[str, list] = {}
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._settle_loop, name="watcher-settle", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._observer.start()
            self._thread.start()
            self._started = True

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(2)
                self._thread.join(2)

    # ---- watches -----------------------------------------------------------------------------
    def watch_folder(self, key: str, folder: Path, on_change: Callable[[], None]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._folders[key] = _Folder(folder, on_change)
        self._schedule(key, folder, recursive=False)

    def watch_files(
        self, key: str, pattern: str | Path, settle_s: float, on_file: Callable[[Path], None]
    ) -> Path:
        """Call `on_file(path)` for each settled arrival matching `pattern` (absolute); returns the
        folder watched (created if missing: a drop folder may not exist before the first file)."""
        base, rest = split_glob(str(pattern))
        base.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._arrivals[key] = _Arrivals(base, rest, settle_s, on_file)
        self._schedule(key, base, recursive="**" in rest or "/" in rest)
        return base

    def unwatch(self, key: str) -> None:
        with self._lock:
            self._arrivals.pop(key, None)
            self._folders.pop(key, None)
            handles = self._handles.pop(key, [])
        for handle in handles:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._observer.unschedule(handle)

    def keys(self) -> list[str]:
        with self._lock:
            return [*self._arrivals, *self._folders]

    def _schedule(self, key: str, folder: Path, recursive: bool) -> None:
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                for attr in ("src_path", "dest_path"):
                    path = getattr(event, attr, "")
                    if path:
                        watcher._noticed(key, Path(os.fsdecode(path)), event.is_directory)

        handle = self._observer.schedule(Handler(), str(folder), recursive=recursive)
        with self._lock:
            self._handles.setdefault(key, []).append(handle)

    def _noticed(self, key: str, path: Path, is_dir: bool) -> None:
        now = time.monotonic()
        with self._lock:
            folder = self._folders.get(key)
            if folder is not None:
                folder.changed_at = now
                return
            arrivals = self._arrivals.get(key)
            if arrivals is None or is_dir or not arrivals.matches(path):
                return
            if path not in arrivals.seen:
                arrivals.seen[path] = (-1, -1, now)

    # ---- settling ----------------------------------------------------------------------------
    def _settle_loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self._settle_once()
            except Exception as exc:  # never let the watches die silently
                log.error("file watcher: %s: %s", type(exc).__name__, exc)

    def _settle_once(self) -> None:
        now = time.monotonic()
        ready: list[tuple[Callable, tuple]] = []
        with self._lock:
            for folder in self._folders.values():
                if folder.changed_at is not None and now - folder.changed_at >= FOLDER_QUIET_S:
                    folder.changed_at = None
                    ready.append((folder.on_change, ()))
            for arrivals in self._arrivals.values():
                for path, (size, mtime, since) in list(arrivals.seen.items()):
                    try:
                        st = path.stat()
                    except OSError:  # gone again (a temporary file renamed away): not an arrival
                        del arrivals.seen[path]
                        continue
                    if (st.st_size, st.st_mtime_ns) != (size, mtime):
                        arrivals.seen[path] = (st.st_size, st.st_mtime_ns, now)
                    elif now - since >= arrivals.settle_s:
                        del arrivals.seen[path]
                        ready.append((arrivals.on_file, (path,)))
        for callback, args in ready:
            try:
                callback(*args)
            except Exception as exc:
                log.error("file watcher callback: %s: %s", type(exc).__name__, exc)
