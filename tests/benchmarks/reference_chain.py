"""The naive per-record reference of the benchmark chain, as a whole process.

It reads the CSV into one dict per row, interprets the pipeline's steps record by record with the
reference kept in the tests (tests/engine/reference.py, the same one the property tests compare the
engine with) and writes the kept records to Parquet.

    python tests/benchmarks/reference_chain.py SPEC.json IN.csv OUT.parquet
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine.reference import run_chain

TYPES = {"order_id": "int", "price": "float", "quantity": "int"}


def main(spec_path: str, src: str, dst: str) -> None:
    steps = json.loads(Path(spec_path).read_text())["transformations"]
    with open(src, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        types = {name: TYPES.get(name, "str") for name in reader.fieldnames or []}
        convert = {"int": int, "float": float, "str": str}
        records = [{k: convert[types[k]](v) if v != "" else None for k, v in row.items()} for row in reader]
    kept, rejected = run_chain(records, steps, types, datetime.now(UTC))
    pq.write_table(pa.Table.from_pylist(kept), dst)
    print(len(kept), len(rejected))


if __name__ == "__main__":
    main(*sys.argv[1:4])
