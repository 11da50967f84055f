"""The benchmark's chain, run by the real engine and by the per-record reference, on random orders.

The benchmark (tests/benchmarks/bench_batch.py) compares `aggregator run` with the naive reference
(tests/engine/reference.py `run_chain`) for speed; this checks that the two also mean the same thing.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace
from tests.engine.reference import run_chain

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_batch.py"


def load_chain() -> list[dict]:
    spec = importlib.util.spec_from_file_location("bench_batch_for_tests", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHAIN


CHAIN = load_chain()
TYPES = {
    "order_id": "int",
    "customer_name": "str",
    "customer_email": "str",
    "price": "float",
    "quantity": "int",
    "status": "str",
}

names = st.none() | st.text("abcXYZ éÉß-' 019", max_size=14)
emails = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "john.smith@example.com",
            "MARY.JONES@EXAMPLE.ORG",
            "li+tag@mail.example.co.uk",
            "o'brien@example.ie",
            "no-at-sign",
            "user@",
            "@example.com",
            "a@b",
            "two words@example.com",
            "trailing.dot@example.",
            "",
        ]
    ),
    st.builds(
        lambda user, domain: f"{user}@{domain}.com",
        st.text("abcXYZ09._-", min_size=1, max_size=6),
        st.text("abcxyz09-", min_size=1, max_size=6),
    ),
)
orders = st.lists(
    st.fixed_dictionaries(
        {
            "customer_name": names,
            "customer_email": emails,
            "price": st.none() | st.floats(0, 10_000, allow_nan=False, allow_infinity=False),
            "quantity": st.none() | st.integers(0, 50),
            "status": st.none()
            | st.sampled_from(["completed", "pending", "cancelled", "Cancelled", "refunded"]),
        }
    ),
    min_size=1,
    max_size=40,
).map(lambda rows: [{"order_id": i, **row} for i, row in enumerate(rows)])


def engine_chain(rows: list[dict], folder: Path) -> tuple[list[dict], dict]:
    (folder / "orders.json").write_text(json.dumps(rows))
    doc = {
        "name": "benchmark chain",
        "sources": [{"name": "orders", "connector_type": "file", "config": {"path": "orders.json"}}],
        "transformations": CHAIN,
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.json"}}],
    }
    with Workspace(folder / "data") as ws:
        record = run_pipeline(validate(doc), ws, base_dir=folder)
    assert record["status"] in ("success", "warning"), record["error"]
    return json.loads((folder / "out.json").read_text()), record


def without_timestamp(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "processed_at"} for row in rows]


def test_the_chain_is_the_benchmarks():
    assert [step["type"] for step in CHAIN] == [
        "field_mapping",
        "field_calculation",
        "record_filter",
        "field_addition",
        "field_validation",
    ]


@settings(max_examples=25, deadline=None)
@given(rows=orders)
def test_engine_matches_the_per_record_reference(rows):
    now = datetime.now(UTC)
    kept, rejected = run_chain(copy.deepcopy(rows), CHAIN, TYPES, now)
    with tempfile.TemporaryDirectory() as tmp:
        out, record = engine_chain(rows, Path(tmp))
    assert without_timestamp(out) == without_timestamp(kept)
    assert record["rows_rejected"] == len(rejected)
    assert record["rows_in"] == len(rows) and record["rows_out"] == len(kept)
    assert all(row["processed_at"].endswith("Z") for row in out)
