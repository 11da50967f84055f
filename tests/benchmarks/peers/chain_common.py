"""What every peer script of the batch chain shares: its arguments, the e-mail pattern and the
one JSON line it prints. The chain is bench_batch.py's CHAIN written by hand:

    customer_name title case -> total = price * quantity -> drop status 'cancelled'
    -> processed_at = the run's start (UTC) -> customer_email must be an e-mail address
       (failing rows go to the rejects output with a reason; a null passes)

Outputs by the extension of --output: `.parquet` (rejects beside it in `<stem>.rejects.parquet`),
`.csv` (rejects in `<stem>.rejects.csv`) or `.duckdb` (table `orders`, rejects in `_rejects`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# The engine's pattern (engine/transforms/validation.py EMAIL_PATTERN), written out: a peer script
# imports nothing of ours.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
)
REASON = "customer_email: not a valid email address"
T0 = time.perf_counter()


def arguments(doc: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--input", type=Path, required=True, help="the orders CSV")
    ap.add_argument("--output", type=Path, required=True, help=".parquet, .csv or .duckdb")
    args = ap.parse_args()
    if args.output.suffix not in (".parquet", ".csv", ".duckdb"):
        ap.error("--output must end in .parquet, .csv or .duckdb")
    return args


def rejects_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.rejects{output.suffix}")


def report(tool: str, rows_out: int, rows_rejected: int) -> None:
    """The one line a peer prints: JSON, nothing else (tests/benchmarks/bench_peers.py reads it)."""
    print(
        json.dumps(
            {
                "tool": tool,
                "rows_out": rows_out,
                "rows_rejected": rows_rejected,
                "seconds_in_script": round(time.perf_counter() - T0, 3),
            }
        )
    )
