"""`aggregator query`: trends and last values from the tag historian.

    aggregator query 'turbine01.*' --start -6h --bucket 5m --stat avg,max
    aggregator query '*' --last --json

TAGS are names, globs (`*.power`) or `re:` regular expressions. Times are ISO 8601 (UTC when no
zone is given), `now`, or relative to now (`now-15m`, `--start=-2h`: argparse takes a bare
`-2h` for an option).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
_RELATIVE = re.compile(r"(?:now)?\s*-\s*(.+)")


def add_query_parser(subparsers) -> argparse.ArgumentParser:
    sp = subparsers.add_parser("query", help="trends (bucketed statistics) or last values of tags")
    sp.add_argument("tags", nargs="+", metavar="TAGS", help="tag names, globs (*.power) or re:REGEX")
    sp.add_argument(
        "--start", help="ISO time, now, or relative: now-1h (or --start=-1h); default: the oldest value"
    )
    sp.add_argument(
        "--end", help="ISO time, now, or relative: now-5m (or --end=-5m); default: the newest value"
    )
    sp.add_argument("--bucket", default="1m", help="bucket width: 10s, 1m, 1h, 1d... (default 1m)")
    sp.add_argument(
        "--stat", default="avg,min,max,last,count", help="statistics: avg,min,max,first,last,sum,count"
    )
    sp.add_argument("--include-bad", action="store_true", help="count bad-quality values in the statistics")
    sp.add_argument("--last", action="store_true", help="the last value of each tag instead of a trend")
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--data-dir", type=Path, help="data directory (default: $AGGREGATOR_HOME, else the user data dir)"
    )
    return sp


def parse_time(text: str | None, now: datetime, what: str) -> datetime | None:
    from engine.api.live import parse_duration
    from engine.errors import UsageError

    if text is None:
        return None
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - parse_duration(relative.group(1), what)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what} '{text}': give an ISO time (2024-05-01T12:00), 'now' or a relative time (-1h)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def cmd_query(args: argparse.Namespace) -> int:
    from engine.errors import AggregatorError

    try:
        return _query(args)
    except AggregatorError as exc:  # UsageError (bad time, bucket, statistic, pattern) exits 2
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code


def _query(args: argparse.Namespace) -> int:
    from engine.api.connect import engine_for
    from engine.api.live import HISTORIAN_FILE, STATISTICS, parse_duration
    from engine.datadir import default_data_dir
    from engine.errors import UsageError

    now = datetime.now(UTC)
    start = parse_time(args.start, now, "--start")
    end = parse_time(args.end, now, "--end")
    if start is not None and end is not None and start >= end:
        raise UsageError(f"--start ({start.isoformat()}) must be before --end ({end.isoformat()})")
    parse_duration(args.bucket, "--bucket")
    stats = [s.strip() for s in args.stat.split(",") if s.strip()]
    wrong = [s for s in stats if s not in STATISTICS]
    if wrong or not stats:
        raise UsageError(f"--stat '{args.stat}': allowed statistics are {', '.join(STATISTICS)}")

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    if not (data_dir / HISTORIAN_FILE).is_file():
        print(f"error: {data_dir}: no historian yet (no tag values stored)", file=sys.stderr)
        return EXIT_FAILED
    # A service that owns the data directory answers through its API (no historian lock error).
    with engine_for(data_dir) as engine:
        if args.last:
            frame = engine.live.last_values(args.tags)
        else:
            bad = {"include_bad": True} if args.include_bad else {}
            frame = engine.live.history(args.tags, start, end, args.bucket, stats, **bad)
    if args.json:
        print(json.dumps(_records(frame), indent=2, default=str))
    else:
        print_table(frame)
    return EXIT_OK


def _records(frame) -> list[dict]:
    import polars as pl

    text = frame.with_columns(
        pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ") for c, t in frame.schema.items() if t == pl.Datetime
    )
    return text.to_dicts()


def print_table(frame) -> None:
    """Plain aligned columns (numbers right-aligned), one line per row; easy to grep and paste."""
    import polars as pl

    if frame.height == 0:
        print("(no values)")
        return
    shown = frame.with_columns(
        [
            pl.col(c).dt.to_string("%Y-%m-%d %H:%M:%S%.3f")
            if t == pl.Datetime
            else pl.col(c).round_sig_figs(6)
            if t == pl.Float64
            else pl.col(c)
            for c, t in frame.schema.items()
        ]
    )
    cells = [list(shown.columns)] + [["" if v is None else str(v) for v in row] for row in shown.iter_rows()]
    numeric = [t.is_numeric() for t in frame.schema.values()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(numeric))]
    for row in cells:
        print(
            "  ".join(
                (v.rjust(w) if num else v.ljust(w)) for v, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
