"""The batch chain as a DuckDB SQL script: one statement per output over a view of the chain, in
one transaction, as a DuckDB user would write it.

    python tests/benchmarks/peers/duckdb_chain.py --input orders.csv --output out.parquet
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_common import EMAIL_PATTERN, REASON, arguments, rejects_path, report

CHAIN = """
CREATE TEMP VIEW chain AS
SELECT * EXCLUDE (customer_name, name_t), name_t AS customer_name,
       price * quantity AS total, {now}::TIMESTAMPTZ AS processed_at,
       coalesce(regexp_full_match(trim(customer_email), {pattern}), true) AS _ok
FROM (
    SELECT *,
           -- title case: the first letter of each word upper, the rest lower (Polars' to_titlecase)
           list_aggregate(
               list_transform(string_split(lower(customer_name), ' '), lambda w: upper(w[1]) || w[2:]),
               'string_agg', ' ') AS name_t
    FROM read_csv({input})
)
WHERE status <> 'cancelled'  -- a null status is dropped too, as the engine's not_equals does
"""


def main() -> None:
    args = arguments(__doc__ or "")
    target = args.output
    con = duckdb.connect(str(target) if target.suffix == ".duckdb" else ":memory:")
    con.execute("SET preserve_insertion_order = false")
    now = datetime.now(UTC).isoformat()
    con.execute("BEGIN")
    con.execute(CHAIN.format(now=_quote(now), pattern=_quote(EMAIL_PATTERN), input=_quote(str(args.input))))
    kept = "SELECT * EXCLUDE (_ok) FROM chain WHERE _ok"
    rejected = f"SELECT * EXCLUDE (_ok), {_quote(REASON)} AS _reject_reason FROM chain WHERE NOT _ok"
    if target.suffix == ".duckdb":
        con.execute(f"CREATE OR REPLACE TABLE orders AS {kept}")
        con.execute(f"CREATE OR REPLACE TABLE _rejects AS {rejected}")
        out = con.execute("SELECT count(*) FROM orders").fetchone()[0]
        bad = con.execute("SELECT count(*) FROM _rejects").fetchone()[0]
    else:
        fmt = "PARQUET" if target.suffix == ".parquet" else "CSV"
        out = con.execute(f"COPY ({kept}) TO {_quote(str(target))} (FORMAT {fmt})").fetchone()[0]
        bad = con.execute(
            f"COPY ({rejected}) TO {_quote(str(rejects_path(target)))} (FORMAT {fmt})"
        ).fetchone()[0]
    con.execute("COMMIT")
    con.close()
    report("duckdb", out, bad)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


if __name__ == "__main__":
    main()
