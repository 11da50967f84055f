"""`aggregator outbox ...`: the store-and-forward outboxes of the remote destinations.

    aggregator outbox status [--data-dir D] [--json]
    aggregator outbox quarantine list [--pipeline P] [--destination N] [--json]
    aggregator outbox quarantine export PIPELINE DESTINATION [--id N ...] [--output FILE]
    aggregator outbox quarantine retry PIPELINE DESTINATION (--id N ... | --all)
    aggregator outbox quarantine delete PIPELINE DESTINATION (--id N ... | --all)
    aggregator outbox edge-id [VALUE]

Through the engine's outbox API: the running service's (`/outbox` routes, engine/api/remote/outbox.py)
when a service owns the data directory, else the outbox files read in this process
(engine/api/outbox.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.cli import EXIT_FAILED, EXIT_OK, print_json

STATUS_COLUMNS = (
    ("destination", "DESTINATION"),
    ("link_state", "LINK"),
    ("pending_records", "PENDING"),
    ("pending_bytes", "BYTES"),
    ("oldest_pending_age_s", "OLDEST_S"),
    ("appended_records", "APPENDED"),
    ("forwarded_records", "FORWARDED"),
    ("dropped_records", "DROPPED"),
    ("quarantined_records", "QUARANTINED"),
)


def add_outbox_parser(sub: Any, data_dir: Any) -> None:
    sp = sub.add_parser("outbox", help="store-and-forward outboxes: status and quarantine")
    osub = sp.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    st = osub.add_parser("status", help="per destination: pending, forwarded, dropped, quarantined, link")
    st.add_argument("--json", action="store_true", help="as JSON")
    data_dir(st)
    eid = osub.add_parser("edge-id", help="print this box's id (part of every idempotency key), or set it")
    eid.add_argument("value", nargs="?", help="the new id (set it before the first delivery)")
    data_dir(eid)
    q = osub.add_parser("quarantine", help="records the upstream refused: list, export, retry, delete")
    qsub = q.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    ql = qsub.add_parser("list", help="the quarantined entries")
    ql.add_argument("--pipeline")
    ql.add_argument("--destination")
    ql.add_argument("--json", action="store_true", help="as JSON")
    data_dir(ql)
    for name, text in (
        ("export", "the quarantined records as JSON (standard output, or --output)"),
        ("retry", "put the records back in the outbox: they are delivered again"),
        ("delete", "delete the records for good"),
    ):
        qa = qsub.add_parser(name, help=text)
        qa.add_argument("pipeline")
        qa.add_argument("destination")
        qa.add_argument(
            "--id", type=int, action="append", dest="ids", metavar="N", help="an entry (repeatable)"
        )
        if name == "export":
            qa.add_argument("--output", "-o", help="write to this file instead of standard output")
        else:
            qa.add_argument("--all", action="store_true", help="every entry of the destination")
        data_dir(qa)


def _api(args: argparse.Namespace):
    """The running service's outbox API when a service owns the data directory (its `/outbox`
    routes: the same figures, and its forwarders see a retry at once), else the outbox files read
    in this process (no engine needed)."""
    from engine.api.connect import service_url
    from engine.api.local import default_data_dir

    data_dir = args.data_dir.expanduser() if getattr(args, "data_dir", None) else default_data_dir()
    url = service_url(data_dir)
    if url is not None:
        from engine.api.remote import RemoteEngine
        from engine.service import token

        remote = RemoteEngine(url, token.ensure(data_dir), data_dir=data_dir)
        return remote.outbox, remote.close
    from engine.api.outbox import LocalOutbox

    return LocalOutbox(data_dir), lambda: None


def cmd_outbox(args: argparse.Namespace) -> int:
    api, close = _api(args)
    try:
        return _outbox(api, args)
    finally:
        close()


def _outbox(api: Any, args: argparse.Namespace) -> int:
    if args.outbox_command == "status":
        rows = api.status()
        if args.json:
            print_json(rows)
        else:
            _print_status(rows)
        return EXIT_OK
    if args.outbox_command == "edge-id":
        print(api.set_edge_id(args.value) if args.value else api.edge_id())
        return EXIT_OK
    action = args.quarantine_command
    if action == "list":
        entries = api.quarantine(args.pipeline, args.destination)
        if args.json:
            print_json(entries)
        elif not entries:
            print("the quarantine is empty")
        else:
            for e in entries:
                print(
                    f"{e['id']:>5} {e['pipeline']}/{e['destination']} {e['created_at']} {e['records']} records,"
                    f" {e['tries']} tries: {e['reason']}"
                )
        return EXIT_OK
    if action == "export":
        records = api.quarantine_records(args.pipeline, args.destination, args.ids)
        text = json.dumps(records, indent=2, default=str)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            print(f"{len(records)} records written to {args.output}")
        else:
            print(text)
        return EXIT_OK
    if not args.ids and not args.all:
        print(f"error: outbox quarantine {action}: name the entries (--id N) or say --all", file=sys.stderr)
        return EXIT_FAILED
    ids = None if args.all else args.ids
    if action == "retry":
        n = api.quarantine_retry(args.pipeline, args.destination, ids)
        print(f"{n} records put back in the outbox of {args.pipeline}/{args.destination}")
    else:
        n = api.quarantine_delete(args.pipeline, args.destination, ids)
        print(f"{n} records deleted from the quarantine of {args.pipeline}/{args.destination}")
    return EXIT_OK


def _print_status(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no outboxes (no remote destination has used store_and_forward here)")
        return
    table = [[h for _, h in STATUS_COLUMNS]]
    for r in rows:
        cells = []
        for key, _ in STATUS_COLUMNS:
            value = r.get(key)
            if key == "destination":
                value = f"{r.get('pipeline')}/{value}"
            cells.append("-" if value is None else str(value))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for r in rows:
        if r.get("link_state") == "down" and r.get("link_detail"):
            print(f"{r['pipeline']}/{r['destination']}: link down: {r['link_detail']}")
        if r.get("corrupt_set_aside"):
            print(
                f"{r['pipeline']}/{r['destination']}: a corrupt outbox was set aside: {r.get('last_set_aside')}"
            )
