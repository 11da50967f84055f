"""The batch chain as a hand-written Polars lazy script: one query, both outputs (kept rows and
rejects) sunk by one `collect_all`, as a Polars user would write it.

    python tests/benchmarks/peers/polars_chain.py --input orders.csv --output out.parquet
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_common import EMAIL_PATTERN, REASON, arguments, rejects_path, report


def main() -> None:
    args = arguments(__doc__ or "")
    now = datetime.now(UTC)
    chain = (
        pl.scan_csv(args.input)
        .with_columns(pl.col("customer_name").str.to_titlecase())
        .with_columns((pl.col("price") * pl.col("quantity")).alias("total"))
        .filter(pl.col("status") != "cancelled")
        .with_columns(pl.lit(now).alias("processed_at"))
        .with_columns(
            pl.col("customer_email")
            .str.strip_chars()
            .str.contains(EMAIL_PATTERN)
            .fill_null(True)
            .alias("_ok")
        )
    )
    kept = chain.filter(pl.col("_ok")).drop("_ok")
    rejected = chain.filter(~pl.col("_ok")).drop("_ok").with_columns(pl.lit(REASON).alias("_reject_reason"))
    if args.output.suffix == ".duckdb":
        import duckdb

        kept_df, rejected_df = pl.collect_all([kept, rejected])
        con = duckdb.connect(str(args.output))
        con.execute("CREATE OR REPLACE TABLE orders AS SELECT * FROM kept_df")
        con.execute("CREATE OR REPLACE TABLE _rejects AS SELECT * FROM rejected_df")
        con.close()
        report("polars", kept_df.height, rejected_df.height)
        return
    sink = "sink_parquet" if args.output.suffix == ".parquet" else "sink_csv"
    pl.collect_all(
        [
            getattr(kept, sink)(args.output, lazy=True),
            getattr(rejected, sink)(rejects_path(args.output), lazy=True),
        ]
    )
    counts = pl.scan_parquet if args.output.suffix == ".parquet" else pl.scan_csv
    report(
        "polars",
        counts(args.output).select(pl.len()).collect().item(),
        counts(rejects_path(args.output)).select(pl.len()).collect().item(),
    )


if __name__ == "__main__":
    main()
