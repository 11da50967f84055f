"""The batch chain as a pandas script (read whole, vectorised column operations), as a pandas user
would write it.

    python tests/benchmarks/peers/pandas_chain.py --input orders.csv --output out.parquet
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_common import EMAIL_PATTERN, REASON, arguments, rejects_path, report


def main() -> None:
    args = arguments(__doc__ or "")
    df = pd.read_csv(args.input, engine="pyarrow", dtype_backend="pyarrow")
    df["customer_name"] = df["customer_name"].str.title()
    df["total"] = df["price"] * df["quantity"]
    df = df[(df["status"] != "cancelled").fillna(False)]
    df["processed_at"] = pd.Timestamp(datetime.now(UTC))
    ok = df["customer_email"].str.strip().str.fullmatch(EMAIL_PATTERN).fillna(True).astype(bool)
    kept, rejected = df[ok], df[~ok].assign(_reject_reason=REASON)
    if args.output.suffix == ".duckdb":
        import duckdb

        con = duckdb.connect(str(args.output))
        con.execute("CREATE OR REPLACE TABLE orders AS SELECT * FROM kept")
        con.execute("CREATE OR REPLACE TABLE _rejects AS SELECT * FROM rejected")
        con.close()
    elif args.output.suffix == ".parquet":
        kept.to_parquet(args.output, index=False)
        rejected.to_parquet(rejects_path(args.output), index=False)
    else:
        kept.to_csv(args.output, index=False)
        rejected.to_csv(rejects_path(args.output), index=False)
    report("pandas", len(kept), len(rejected))


if __name__ == "__main__":
    main()
