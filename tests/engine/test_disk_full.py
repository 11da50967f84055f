"""A full disk: one line naming the file, a `failed` run, the space given back (temporary files
removed, DuckDB's grown file cut back), and the next run works. A real small file system (a 20 MB
tmpfs, mounted for the test; skipped with the reason where mounting is not permitted), and, on any
machine, a real file size limit (RLIMIT_FSIZE: the kernel refuses the write with EFBIG)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.diskspace import NoSpaceError
from engine.store.metadata import MetadataStore

resource = pytest.importorskip("resource", reason="file size limits (RLIMIT_FSIZE) are POSIX")
EXE = Path(sys.executable).parent / "aggregator"
DISK_MB = 20


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a {DISK_MB} MB tmpfs here ({mounted.stderr.strip()}); see the RLIMIT_FSIZE test"
        )
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def free_mb(path: Path) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1e6


def pipeline(folder: Path, name: str, rows: int, *destinations: dict) -> Path:
    doc = {
        "name": name,
        "sources": [
            {
                "name": "readings",
                "connector_type": "duckdb",
                "config": {
                    "query": "SELECT range AS id, range * 0.5 AS value, md5(range::VARCHAR) AS checksum"  # no compression
                    f" FROM range({rows})"
                },
            }
        ],
        "destinations": list(destinations),
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def aggregator(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=120, **kwargs)


def last_run(data: Path) -> dict:
    store = MetadataStore(data / "metadata.db")
    try:
        return store.runs(limit=1)[0]
    finally:
        store.close()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*")) if folder.exists() else []


def check_next_run_works(tmp_path: Path, data: Path, out: Path) -> None:
    small = pipeline(
        tmp_path,
        "small",
        1000,
        {"name": "copy", "connector_type": "file", "config": {"path": str(out / "small.csv")}},
        {"name": "table", "connector_type": "duckdb", "config": {"table": "small"}},
    )
    again = aggregator("run", small, "--data-dir", data, "--json")
    assert again.returncode == 0, again.stderr
    record = json.loads(again.stdout)
    assert record["status"] == "success" and record["rows_out"] == 1000
    assert len((out / "small.csv").read_text().splitlines()) == 1001


def test_a_file_destination_fills_the_disk(tmp_path, small_disk):
    data, out = small_disk / "data", small_disk / "out"
    spec = pipeline(
        tmp_path,
        "big",
        3_000_000,  # about 170 MB of CSV
        {"name": "copy", "connector_type": "file", "config": {"path": str(out / "readings.csv")}},
    )
    run = aggregator("run", spec, "--data-dir", data)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"error: no space left on device while writing {out / 'readings.csv'}"]
    record = last_run(data)
    assert record["status"] == "failed"
    assert record["error"] == f"no space left on device while writing {out / 'readings.csv'}"
    assert hidden(out) == [] and not (out / "readings.csv").exists()
    assert free_mb(small_disk) > DISK_MB * 0.8
    check_next_run_works(tmp_path, data, out)


def test_the_historian_fills_the_disk_and_gives_the_space_back(tmp_path, small_disk):
    data, out = small_disk / "data", small_disk / "out"
    spec = pipeline(
        tmp_path,
        "big",
        3_000_000,
        {"name": "table", "connector_type": "duckdb", "config": {"table": "readings"}},
    )
    run = aggregator("run", spec, "--data-dir", data, "--json")
    assert run.returncode == 1
    historian = data / "historian.duckdb"
    record = json.loads(run.stdout)
    assert record["status"] == "failed", record
    assert record["error"] == f"no space left on device while writing {historian}"
    assert last_run(data)["status"] == "failed"
    assert "Traceback" not in run.stderr
    assert historian.stat().st_size < 2_000_000, "DuckDB kept the space it grew into"
    assert free_mb(small_disk) > DISK_MB * 0.8
    check_next_run_works(tmp_path, data, out)


def test_metadata_store_survives_a_full_disk(small_disk):
    """Log lines wait in memory while nothing can be written, and go out with the next write; a run
    record that cannot be written is one line naming metadata.db."""
    store = MetadataStore(small_disk / "metadata.db")
    ballast = small_disk / "ballast"
    try:
        with open(ballast, "wb") as fh:
            block = b"\0" * (1 << 20)
            try:
                while True:
                    fh.write(block)
                    fh.flush()
            except OSError:
                pass
        text = "a line long enough to need pages of its own " * 2000
        for _ in range(50):
            store.log("r1", "info", text)  # never raises
        with pytest.raises(NoSpaceError) as caught:
            for n in range(200):
                store.upsert_run({"run_id": f"r{n}", "pipeline": "p", "status": "running", "error": text})
        assert str(caught.value) == f"no space left on device while writing {small_disk / 'metadata.db'}"
        ballast.unlink()
        store.upsert_run({"run_id": "r1", "pipeline": "p", "status": "failed", "error": "disk full"})
        assert store.run("r1")["status"] == "failed"
        assert len(store.logs("r1")) == 50
    finally:
        ballast.unlink(missing_ok=True)
        store.close()


def test_a_file_size_limit_is_one_line_and_the_next_run_works(tmp_path):
    """No mount needed: the run's process may not write files over 8 MB (RLIMIT_FSIZE), so its CSV
    destination is refused by the kernel (EFBIG) half way."""
    data, out = tmp_path / "data", tmp_path / "out"
    spec = pipeline(
        tmp_path,
        "big",
        1_000_000,
        {"name": "copy", "connector_type": "file", "config": {"path": str(out / "readings.csv")}},
    )
    limit = 8 << 20

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = aggregator("run", spec, "--data-dir", data, preexec_fn=limited)
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"error: file size limit reached while writing {out / 'readings.csv'}"]
    assert last_run(data)["status"] == "failed"
    assert hidden(out) == [] and not (out / "readings.csv").exists()
    check_next_run_works(tmp_path, data, out)
