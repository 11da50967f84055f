"""`aggregator token [--data-dir D]`: print the data directory's API token (created on first use)."""

from __future__ import annotations

import argparse

from app.cli import EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    from engine.api.local import default_data_dir
    from engine.service import token

    data_dir = args.data_dir.expanduser() if args.data_dir else default_data_dir()
    print(token.ensure(data_dir))
    return EXIT_OK
