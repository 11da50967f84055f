"""`engine.pipelines.list()` (GET /pipelines) reads a spec file again only when it changed: before,
every call parsed every file (the shipped examples' too), a quarter of the API's CPU under a mixed
read load (tests/benchmarks/bench_api_load.py)."""

from __future__ import annotations

import json
import os

import pytest

import engine.spec.io as spec_io
from engine.api import LocalEngine


@pytest.fixture
def engine(tmp_path):
    engine = LocalEngine(tmp_path / "data")
    yield engine
    engine.close()


def _doc(name: str) -> str:
    return json.dumps(
        {
            "name": name,
            "sources": [{"name": "in", "connector_type": "file", "config": {"path": "in.csv"}}],
            "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "out.csv"}}],
        }
    )


def test_a_spec_file_is_read_again_only_when_it_changed(engine, monkeypatch):
    reads: list[str] = []
    real = spec_io.read_document

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(spec_io, "read_document", counting)
    path = engine.pipelines.folder() / "mine.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_doc("first name"), encoding="utf-8")

    def mine():
        return [e for e in engine.pipelines.list() if e["path"] == str(path)]

    assert [e["name"] for e in mine()] == ["first name"]
    assert reads.count(str(path)) == 1
    assert [e["name"] for e in mine()] == ["first name"]
    assert reads.count(str(path)) == 1  # unchanged: not read again
    listed = len(reads)
    engine.pipelines.list()
    assert len(reads) == listed  # nor the examples and templates

    # the same size and the same mtime, another text: still seen (a new inode, as a save makes)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_doc("other name"), encoding="utf-8")
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert [e["name"] for e in mine()] == ["other name"]
    # rewritten in place, another length
    path.write_text(_doc("a third, longer name"), encoding="utf-8")
    assert [e["name"] for e in mine()] == ["a third, longer name"]
    # broken: its error is shown, as before
    path.write_text("{not json", encoding="utf-8")
    assert mine()[0]["error"]
