"""`aggregator users ...` and `aggregator login`: local users and their logins (issue 14).

    aggregator users add NAME --role admin|editor|viewer [--password-stdin]
    aggregator users list [--json]
    aggregator users set-role NAME ROLE
    aggregator users passwd NAME [--password-stdin]
    aggregator users delete NAME
    aggregator login --user NAME [--password-stdin] [--url URL]   # prints an access token

Through EngineAPI: the running service's when one owns the data directory (as the service's token,
admin, or as the user of `$AGGREGATOR_TOKEN`), else the engine in this process as the local OS user
(admin). A password is read with getpass (asked twice) or, with --password-stdin, as the first line
of standard input; it is never echoed, printed or logged.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.cli import EXIT_OK, print_json

ROLE_CHOICES = ("admin", "editor", "viewer")


def add_users_parser(sub: Any, data_dir: Any) -> None:
    sp = sub.add_parser(
        "users", help="local users and their roles (admin): add, list, set-role, passwd, delete"
    )
    usub = sp.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    ss = usub.add_parser("add", help="add a user with a role (the password is asked for, or read from stdin)")
    ss.add_argument("name")
    ss.add_argument("--role", required=True, choices=ROLE_CHOICES)
    ss.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    data_dir(ss)
    ss = usub.add_parser("list", help="the users, their roles and lockouts (never a password)")
    ss.add_argument("--json", action="store_true")
    data_dir(ss)
    ss = usub.add_parser("set-role", help="change a user's role")
    ss.add_argument("name")
    ss.add_argument("role", choices=ROLE_CHOICES)
    data_dir(ss)
    ss = usub.add_parser("passwd", help="set a user's password (also clears a lockout, logs the user out)")
    ss.add_argument("name")
    ss.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    data_dir(ss)
    ss = usub.add_parser("delete", help="delete a user")
    ss.add_argument("name")
    data_dir(ss)

    sp = sub.add_parser(
        "login", help="log in to the running service: prints an access token for $AGGREGATOR_TOKEN"
    )
    sp.add_argument("--user", required=True)
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp.add_argument("--url", help="the service (default: the one that owns the data directory)")
    sp.add_argument(
        "--json", action="store_true", help="the whole answer: access and refresh tokens, expiry, role"
    )
    data_dir(sp)


def read_password(args: argparse.Namespace, prompt: str, confirm: bool) -> str:
    """From stdin's first line with --password-stdin, else asked on the terminal (never echoed)."""
    from engine.errors import UsageError

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError(
            "no terminal to ask for the password on: give --password-stdin and send it on standard input"
        )
    import getpass

    password = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != password:
        raise UsageError("the two passwords differ")
    return password


def cmd_users(args: argparse.Namespace) -> int:
    from engine.api.auth import check_password
    from engine.api.connect import engine_for

    action = args.users_command
    password = None
    if action in ("add", "passwd"):
        password = read_password(args, f"password for {args.name}: ", confirm=True)
        check_password(args.name, password)  # before anything else: the policy says what is wrong
    with engine_for(getattr(args, "data_dir", None)) as engine:
        if action == "add":
            user = engine.users.add(args.name, args.role, password)
            print(f"user '{user['name']}' added as {user['role']}")
        elif action == "list":
            rows = engine.users.list()
            if args.json:
                print_json(rows)
            elif not rows:
                print("no users (`aggregator users add NAME --role admin` adds one)")
            else:
                _print(rows)
        elif action == "set-role":
            user = engine.users.set_role(args.name, args.role)
            print(f"user '{user['name']}' is {user['role']} (was {user.get('previous_role', '?')})")
        elif action == "passwd":
            engine.users.set_password(args.name, password)
            print(f"password of '{args.name}' changed")
        elif action == "delete":
            if not engine.users.delete(args.name):
                from engine.errors import DataError

                raise DataError(f"user '{args.name}' not found (`aggregator users list` lists them)")
            print(f"user '{args.name}' deleted")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    from engine.api.connect import service_url
    from engine.api.remote.users import login
    from engine.errors import UsageError

    url = args.url or service_url(getattr(args, "data_dir", None))
    if url is None:
        raise UsageError("no service runs on this data directory (give --url URL): a login is for a service")
    password = read_password(args, f"password for {args.user}: ", confirm=False)
    tokens = login(url, args.user, password, source="cli")
    if args.json:
        print_json(tokens)
    else:
        print(tokens["access_token"])
        print(f"{tokens['user']} ({tokens['role']}), valid {tokens['expires_in'] // 60} min:"
              " export AGGREGATOR_TOKEN=<the line above>", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _print(rows: list[dict[str, Any]]) -> None:
    head = ("NAME", "ROLE", "CREATED", "LOCKED UNTIL")
    table = [
        (
            r["name"],
            r["role"],
            (r["created_at"] or "")[:19].replace("T", " "),
            (r.get("locked_until") or "")[:19],
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    for line in (head, *table):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
