"""`aggregator audit`: the audit trail (admin), newest first, or its chain verified.

aggregator audit [--user U] [--action A] [--since T] [--until T] [--outcome O] [--limit N]
                 [--json | --csv FILE] [--data-dir D]
aggregator audit --verify          # exit 0 and the head hash; exit 1 naming the first bad entry
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.cli import EXIT_FAILED, EXIT_OK, print_json


def add_audit_parser(sub: Any, data_dir: Any) -> None:
    sp = sub.add_parser(
        "audit", help="the audit trail (admin): who did what, when, from where; --verify its chain"
    )
    sp.add_argument("--user", help="only this user's entries")
    sp.add_argument("--action", help="an action or its prefix: users, runs.start, auth.login")
    sp.add_argument("--since", help="from this time (ISO 8601; UTC unless it says otherwise)")
    sp.add_argument("--until", help="before this time")
    sp.add_argument("--outcome", choices=("ok", "denied", "failed"))
    sp.add_argument("--limit", type=int, default=1000, help="at most this many (newest first; default 1000)")
    sp.add_argument("--json", action="store_true", help="as JSON")
    sp.add_argument("--csv", type=Path, metavar="FILE", help="write the entries to a CSV file")
    sp.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chain: ok and the head hash, or the first bad entry",
    )
    data_dir(sp)


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.api.auth import to_csv
    from engine.api.connect import engine_for

    with engine_for(getattr(args, "data_dir", None)) as engine:
        if args.verify:
            result = engine.audit.verify()
            if args.json:
                print_json(result)
            elif result["ok"]:
                print(f"audit trail intact: {result['entries']} entries, head {result['head']}")
            else:
                print(f"error: audit trail broken: {result['reason']}", file=sys.stderr)
            return EXIT_OK if result["ok"] else EXIT_FAILED
        entries = engine.audit.list(args.user, args.action, args.since, args.until, args.outcome, args.limit)
    if args.csv:
        target = args.csv.expanduser()
        part = target.with_name(f".{target.name}.part")
        part.write_text(to_csv(entries), encoding="utf-8")
        os.replace(part, target)  # whole or not at all
        print(f"{len(entries)} entries written to {target}")
    elif args.json:
        print_json(entries)
    elif not entries:
        print("no audit entries")
    else:
        _print(entries)
    return EXIT_OK


def _print(entries: list[dict[str, Any]]) -> None:
    head = ("TIME", "USER", "ROLE", "SOURCE", "ACTION", "TARGET", "OUTCOME")
    table = [
        (
            (e["ts"] or "")[:19].replace("T", " "),
            e.get("user") or "-",
            e.get("role") or "-",
            (e.get("source") or "") + (f" {e['client']}" if e.get("client") else ""),
            e["action"],
            e.get("target") or "",
            e["outcome"] + (f": {e['reason']}" if e.get("reason") else ""),
        )
        for e in entries
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head[:-1])]
    for line in (head, *table):
        print("  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
