"""Who owns a run: a process id plus the process's start time, so that a reused id is not taken for
the owner. Linux reads the start time from /proc/<pid>/stat (clock ticks since boot, with the boot
id); Windows asks GetProcessTimes; elsewhere the id alone is checked."""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def start_time(pid: int) -> str | None:
    """The process's start time as an opaque text (None when it cannot be told, or no process)."""
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # Field 22 (starttime); the command name (field 2) may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        return f"{fields[19]}@{_boot_id()}" if len(fields) > 19 else None
    if sys.platform == "win32":
        return _windows_start_time(pid)
    return None


def current() -> tuple[int, str | None]:
    """This process: (pid, start time)."""
    pid = os.getpid()
    return pid, start_time(pid)


def alive(pid: int | None, started: str | None) -> bool:
    """Is the process that recorded (`pid`, `started`) still running? A live process with the same
    id but another start time is someone else (the id was reused)."""
    if not pid:
        return False
    if sys.platform == "win32":
        now = _windows_start_time(pid)
        if now is None:
            return _windows_exists(pid)
        return started is None or now == started
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists (POSIX)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if started is None:
        return True
    now = start_time(pid)
    return now is None or now == started


# ---- Windows ---------------------------------------------------------------------------------------
_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259


def _windows_open(pid: int):
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    return kernel32, kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)


def _windows_exists(pid: int) -> bool:
    import ctypes

    kernel32, handle = _windows_open(pid)
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _windows_start_time(pid: int) -> str | None:
    import ctypes

    kernel32, handle = _windows_open(pid)
    if not handle:
        return None
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        if code.value != _STILL_ACTIVE:
            return None
        times = [ctypes.c_ulonglong() for _ in range(4)]
        if not kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        return str(times[0].value)  # creation time, 100 ns units since 1601
    finally:
        kernel32.CloseHandle(handle)
