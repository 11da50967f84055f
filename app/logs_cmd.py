"""`aggregator logs [--data-dir D] [--run ID] [--follow] [--json] [--lines N]`: the service's log.

The service writes JSON lines to `<data dir>/logs/aggregator.jsonl`, rotated to `.1` ... `.5`
(engine/service/logs.py). This shows them oldest first, as human lines (or as they are with
`--json`); `--run` keeps the lines of one run; `--follow` keeps showing new lines as they come,
across rotations, until Ctrl-C. Before any log file exists, `--run ID` shows the run's log lines
from the metadata store (through the engine's API), and without `--run` it says where logs will be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

FOLLOW_POLL_S = 0.2  # how often --follow looks for new lines


def add_logs_parser(sub: Any, data_dir: Any) -> None:
    sp = sub.add_parser("logs", help="the service's log: JSON lines under the data directory")
    sp.add_argument("--run", metavar="ID", help="only the lines of this run")
    sp.add_argument("--follow", "-f", action="store_true", help="keep showing new lines until Ctrl-C")
    sp.add_argument("--json", action="store_true", help="the lines as they are stored (one JSON object each)")
    sp.add_argument("--lines", "-n", type=_count, default=None, metavar="N", help="only the last N lines")
    data_dir(sp)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


def log_files(data_dir: Path) -> list[Path]:
    """The log file and its rotated predecessors, oldest first."""
    from engine.service.logs import log_file

    current = log_file(data_dir)
    rotated = sorted(
        (p for p in current.parent.glob(current.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return [*rotated, *([current] if current.exists() else [])]


def parse(line: str) -> dict[str, Any] | None:
    """A stored line as its object; None for a line that is not one (a crash cut it short)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def human(entry: dict[str, Any]) -> str:
    level = str(entry.get("level", "")).lower()
    return f"{entry.get('ts', '')} {level:<7} {entry.get('msg', '')}"


def selected(lines: Iterable[str], args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(line, its object) of each stored line that passes the filter (`--run`), parsed once; the
    object is None for a line that is not one, and with `--json` (the lines shown as they are)."""
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        entry = parse(line) if args.run or not args.json else None
        if args.run and (entry is None or entry.get("run_id") != args.run):
            continue
        yield line, None if args.json else entry


def show(lines: Iterable[tuple[str, dict[str, Any] | None]], out: TextIO) -> None:
    """Print what `selected` gave: the line as stored, or its human form."""
    for line, entry in lines:
        print(line if entry is None else human(entry), file=out)
    out.flush()


def _lines(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                yield from fh
        except FileNotFoundError:  # rotated away meanwhile
            continue


def run_logs(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from engine.api.local import default_data_dir

    out = out or sys.stdout
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    files = log_files(data_dir)
    if not files and not args.follow:
        return _no_log_file(data_dir, args, out)
    shown = selected(_lines(files), args)
    show(shown if args.lines is None else deque(shown, maxlen=args.lines), out)
    if not args.follow:
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the normal end of --follow
        follow(data_dir, args, out)
    return 0


def follow(data_dir: Path, args: argparse.Namespace, out: TextIO, stop: Any = None) -> None:
    """Show lines appended to the log from its end on, until `stop()` is true (or Ctrl-C). A
    rotation (the file renamed to `.1`, a new one begun) is followed: the rest of the old file is
    read, then the new one from its start."""
    from engine.service.logs import log_file

    path = log_file(data_dir)
    fh, inode = _open_at_end(path)
    pending = ""
    while stop is None or not stop():
        if fh is None:
            fh, inode = _open(path)
            pending = ""
            if fh is None:
                time.sleep(FOLLOW_POLL_S)
                continue
        chunk = fh.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            show(selected(complete, args), out)
            continue
        try:
            now = os.stat(path).st_ino
        except FileNotFoundError:
            now = None
        if now != inode:  # rotated: what was left in the old file was read above
            fh.close()
            show(selected(_lines(_rotated_since(data_dir, inode)), args), out)  # rotated past meanwhile
            fh, inode = None, None
            continue
        time.sleep(FOLLOW_POLL_S)
    if fh is not None:
        fh.close()


def _rotated_since(data_dir: Path, inode: int | None) -> list[Path]:
    """The rotated files newer than the one with `inode` (several rotations can happen between two
    looks); all of them if that file is gone (rotated out of the kept ones)."""
    rotated = log_files(data_dir)
    rotated = [p for p in rotated if p.suffix[1:].isdigit()]
    for i, path in enumerate(rotated):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == inode:
                return rotated[i + 1 :]
    return rotated


def _open(path: Path) -> tuple[TextIO | None, int | None]:
    try:
        fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - held across the loop
    except FileNotFoundError:
        return None, None
    return fh, os.fstat(fh.fileno()).st_ino


def _open_at_end(path: Path) -> tuple[TextIO | None, int | None]:
    fh, inode = _open(path)
    if fh is not None:
        fh.seek(0, os.SEEK_END)
    return fh, inode


def _no_log_file(data_dir: Path, args: argparse.Namespace, out: TextIO) -> int:
    from engine.service.logs import log_file

    where = log_file(data_dir)
    if not args.run:
        print(f"no log yet: `aggregator serve` writes it to {where}", file=out)
        return 0
    from engine.api.local import LocalEngine

    with LocalEngine(data_dir, workers=1) as engine:
        detail = engine.runs.detail(args.run)  # DataError (exit 1) for an unknown run
    for row in detail["logs"]:
        entry = {
            "ts": row["ts"],
            "level": row["level"],
            "logger": "aggregator.run",
            "msg": row["message"],
            "run_id": args.run,
            **({"node": row["node_id"]} if row.get("node_id") else {}),
        }
        print(json.dumps(entry) if args.json else human(entry), file=out)
    return 0
