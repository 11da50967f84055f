"""The embedded historian: one DuckDB file per data directory, written only by this process."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

REJECTS_TABLE = "_rejects"


class Historian:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the shared connection: one per thread, all in one DuckDB instance."""
        with self._lock:
            if self._con is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._con = duckdb.connect(str(self.path))
                self._con.execute("SET GLOBAL preserve_insertion_order = false")
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ---- reject store ------------------------------------------------------------------------
    def write_rejects(
        self,
        rows: pl.DataFrame,
        *,
        run_id: str,
        pipeline: str,
        node_id: str,
        reason_column: str = "_reject_reason",
    ) -> int:
        """Keep rejected records with their reason, node and run id (record stored as JSON)."""
        if rows.height == 0:
            return 0
        reasons = (
            rows.get_column(reason_column)
            if reason_column in rows.columns
            else pl.Series([None] * rows.height)
        )
        payload = rows.drop(reason_column) if reason_column in rows.columns else rows
        records = _records_as_json(payload)
        table = pl.DataFrame(
            {
                "run_id": [run_id] * rows.height,
                "pipeline": [pipeline] * rows.height,
                "node_id": [node_id] * rows.height,
                "reason": reasons.cast(pl.String),
                "record": records,
                "rejected_at": [datetime.now(UTC).replace(tzinfo=None)] * rows.height,
            }
        ).to_arrow()
        cur = self.cursor()
        try:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {REJECTS_TABLE} (run_id VARCHAR, pipeline VARCHAR, node_id VARCHAR,"
                " reason VARCHAR, record JSON, rejected_at TIMESTAMP)"
            )
            cur.register("_reject_batch", table)
            cur.execute(f"INSERT INTO {REJECTS_TABLE} SELECT * FROM _reject_batch")
            cur.unregister("_reject_batch")
        finally:
            cur.close()
        return rows.height

    def rejects(self, run_id: str | None = None) -> pl.DataFrame:
        cur = self.cursor()
        try:
            exists = cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [REJECTS_TABLE]
            ).fetchall()[0][0]
            if not exists:
                return pl.DataFrame(
                    schema={
                        "run_id": pl.String,
                        "node_id": pl.String,
                        "reason": pl.String,
                        "record": pl.String,
                    }
                )
            where, params = ("WHERE run_id = ?", [run_id]) if run_id else ("", [])
            tbl = cur.sql(
                f"SELECT run_id, pipeline, node_id, reason, record::VARCHAR AS record, rejected_at"
                f" FROM {REJECTS_TABLE} {where} ORDER BY rejected_at",
                params=params,
            ).to_arrow_table()
            return pl.from_arrow(tbl)
        finally:
            cur.close()


def _records_as_json(df: pl.DataFrame) -> pl.Series:
    """One JSON object per row, built column-wise by Polars (no per-row Python dicts)."""
    if not df.columns:
        return pl.Series("record", ["{}"] * df.height)
    safe = df.select(
        [
            pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")
            if df.schema[c] in (pl.Datetime, pl.Date)
            else pl.col(c)
            for c in df.columns
        ]
    )
    return safe.select(pl.struct(pl.all()).struct.json_encode().alias("record")).to_series()
