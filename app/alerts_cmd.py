"""`aggregator alerts ...`: the alerts of the pipelines' `error_handling.alerts` rules.

    aggregator alerts [--all] [--severity S] [--pipeline P] [--json] [--data-dir D]
    aggregator alerts ack ID [--note TEXT] [--by NAME] [--json] [--data-dir D]

Through EngineAPI: the running service's (`/alerts` routes) when a service owns the data
directory, else the engine in this process (engine/api/connect.py).
"""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import EXIT_OK, print_json

SEVERITIES = ("info", "warning", "critical")


def add_alerts_parser(sub: Any, data_dir: Any) -> None:
    sp = sub.add_parser("alerts", help="alerts raised by the pipelines' rules: list, acknowledge")
    sp.add_argument("--all", action="store_true", help="cleared alerts too (default: the open ones)")
    sp.add_argument("--severity", choices=SEVERITIES, help="only alerts of this severity")
    sp.add_argument("--pipeline", help="only alerts of this pipeline")
    sp.add_argument("--json", action="store_true", help="as JSON")
    data_dir(sp)
    asub = sp.add_subparsers(dest="alerts_command", metavar="ACTION")
    ack = asub.add_parser("ack", help="acknowledge an open alert (it stays open until it clears)")
    ack.add_argument("id", type=int, help="the alert's id (aggregator alerts lists them)")
    ack.add_argument("--note", help="why, what is being done")
    ack.add_argument("--by", help="who acknowledges (default: your user name)")
    ack.add_argument("--json", action="store_true", help="as JSON")
    data_dir(ack)


def cmd_alerts(args: argparse.Namespace) -> int:
    from engine.api.connect import engine_for

    with engine_for(getattr(args, "data_dir", None)) as engine:
        if getattr(args, "alerts_command", None) == "ack":
            by = args.by
            if by is None:
                import getpass

                by = getpass.getuser()
            alert = engine.alerts.acknowledge(args.id, by, args.note)
            if args.json:
                print_json(alert)
            else:
                print(
                    f"alert {alert['id']} acknowledged by {alert['acknowledged_by']} at {alert['acknowledged_at']}"
                )
            return EXIT_OK
        rows = engine.alerts.list(not args.all, args.severity, args.pipeline)
    if args.json:
        print_json(rows)
    elif not rows:
        print("no open alerts" if not args.all else "no alerts")
    else:
        _print(rows)
    return EXIT_OK


def _print(rows: list[dict[str, Any]]) -> None:
    head = ("ID", "SEVERITY", "STATE", "RAISED", "PIPELINE", "SUBJECT", "MESSAGE")
    table = [
        (
            str(r["id"]),
            r["severity"],
            r["state"],
            (r["raised_at"] or "")[:19].replace("T", " "),
            r["pipeline"],
            r["subject"],
            (r["message"] or "") + (f" (ack: {r['acknowledged_by']})" if r.get("acknowledged_by") else ""),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head[:-1])]
    for line in (head, *table):
        print("  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1])
