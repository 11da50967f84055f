"""The historian connection's memory settings (issue 10): DuckDB's memory_limit (an edge default,
or AGGREGATOR_HISTORIAN_MEMORY_LIMIT), its threads, and its temp_directory in the data directory."""

from __future__ import annotations

import duckdb
import pytest

from engine.errors import UsageError
from engine.store.historian import MEMORY_LIMIT_ENV, THREADS_ENV, Historian, default_memory_limit


def setting(historian: Historian, name: str) -> str:
    cur = historian.cursor()
    try:
        return cur.execute(f"SELECT current_setting('{name}')").fetchone()[0]
    finally:
        cur.close()


def in_mib(text: str) -> float:
    """DuckDB's way of showing a size ('122.0 MiB', '1.9 GiB') in MiB."""
    number, unit = text.split()
    return float(number) * {"KiB": 2**-10, "MiB": 1, "GiB": 2**10}[unit]


def test_the_default_memory_limit_is_an_edge_one(tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert default_memory_limit().endswith("MB") and int(default_memory_limit()[:-2]) == 32
    historian = Historian(tmp_path / "data" / "historian.duckdb")
    try:
        limit = in_mib(setting(historian, "memory_limit"))
        assert 30 <= limit <= 30.6  # DuckDB shows 32 MB (10^6 bytes) as 30.5 MiB
        assert setting(historian, "temp_directory") == str(tmp_path / "data" / "historian.duckdb.tmp")
    finally:
        historian.close()


def test_the_environment_sets_memory_limit_and_threads(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "300MiB")
    monkeypatch.setenv(THREADS_ENV, "1")
    historian = Historian(tmp_path / "historian.duckdb")
    try:
        assert setting(historian, "memory_limit") == "300.0 MiB"
        assert setting(historian, "threads") == 1
    finally:
        historian.close()


@pytest.mark.parametrize(
    ("name", "bad"), [(MEMORY_LIMIT_ENV, "lots"), (MEMORY_LIMIT_ENV, "12"), (THREADS_ENV, "0")]
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, monkeypatch, name, bad):
    monkeypatch.setenv(name, bad)
    with pytest.raises(UsageError, match=f"^{name}: '{bad}' is not a"):
        Historian(tmp_path / "historian.duckdb").cursor()


def test_a_query_bigger_than_the_limit_spills_into_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "40MB")
    monkeypatch.setenv(THREADS_ENV, "1")
    historian = Historian(tmp_path / "historian.duckdb")
    try:
        cur = historian.cursor()
        # ~3 M distinct groups: a hash aggregate of well over 40 MB, which must spill, not fail.
        groups = cur.execute(
            "SELECT count(*) FROM (SELECT i % 3000000 AS k, sum(i) FROM range(6000000) t(i) GROUP BY k)"
        ).fetchone()[0]
        assert groups == 3_000_000
        cur.close()
    except duckdb.OutOfMemoryException as exc:  # pragma: no cover - the failure this guards against
        pytest.fail(f"the historian did not spill: {exc}")
    finally:
        historian.close()
