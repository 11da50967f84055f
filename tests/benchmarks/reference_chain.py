"""The naive per-record implementation of the benchmark chain: one Python dict per row.

This is what a hand-written script (or a per-message flow engine) does; the benchmark compares
whole `aggregator run` processes against it.

    python tests/benchmarks/reference_chain.py IN.csv OUT.parquet
"""

from __future__ import annotations

import csv
import re
import sys
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")


def main(src: str, dst: str) -> None:
    now = datetime.now(UTC)
    good, rejected = [], []
    with open(src, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            row["order_id"] = int(row["order_id"])
            row["price"] = float(row["price"])
            row["quantity"] = int(row["quantity"])
            row["customer_name"] = row["customer_name"].title()
            row["total"] = row["price"] * row["quantity"]
            if row["status"] == "cancelled":
                continue
            row["processed_at"] = now
            if EMAIL.match(row["customer_email"] or ""):
                good.append(row)
            else:
                rejected.append({**row, "_reject_reason": "customer_email: not a valid email address"})
    pq.write_table(pa.Table.from_pylist(good), dst)
    print(len(good), len(rejected))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
