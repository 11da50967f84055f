"""The `custom` connector: the user guide's template as written, the batch form, the destination
form, test connection, one-line errors naming the class, and loading from plugins/ only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from pydantic import ValidationError

from engine.connectors import registry
from engine.connectors.custom import CustomSourceConfig
from engine.context import RunContext
from engine.errors import ConnectorError
from engine.runner import run_pipeline
from engine.spec.validate import validate
from engine.workspace import Workspace

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "templates"

# The user guide's template, as written (fetch_data returns a list of dicts).
GUIDE_TEMPLATE = """
class CustomConnector:
    def __init__(self, config):
        self.config = config
        self.connection = None

    def connect(self):
        self.connection = {"site": self.config.get("site", "plant")}

    def fetch_data(self):
        return [
            {"line": f"L{i}", "site": self.connection["site"], "count": i * 10}
            for i in range(self.config.get("rows", 3))
        ]

    def close(self):
        self.connection = None
"""

BATCHES = """
import polars as pl
import pyarrow as pa

class Meters:
    def __init__(self, config):
        self.n = config["batches"]

    def fetch_batches(self):
        for i in range(self.n):
            if i % 2:
                yield pa.table({"meter": [i, i], "kwh": [1.5, 2.5]})
            else:
                yield pl.DataFrame({"meter": [i, i], "kwh": [0.5, 1.0]})
"""

SINK = """
from pathlib import Path

import polars as pl


class Collector:
    def __init__(self, config):
        self.out = Path(config["out"])
        self.fail_on_commit = config.get("fail_on_commit", False)
        self.pending = []
        self.log = Path(config["out"] + ".log")

    def _say(self, what):
        with open(self.log, "a") as fh:
            fh.write(what + "\\n")

    def connect(self):
        self._say("connect")

    def write_batch(self, frame):
        self._say(f"write {type(frame).__module__.split('.')[0]}")
        self.pending.append(frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame))

    def commit(self):
        if self.fail_on_commit:
            raise RuntimeError("disk says no")
        pl.concat(self.pending).write_parquet(self.out)
        self._say("commit")

    def rollback(self):
        self.pending = []
        self._say("rollback")

    def close(self):
        self._say("close")
"""

BROKEN = """
class Broken:
    def __init__(self, config):
        self.where = config.get("where", "fetch")

    def connect(self):
        if self.where == "connect":
            raise ConnectionRefusedError("[Errno 111] Connection refused by historian.plant:9000")

    def fetch_data(self):
        raise ValueError("the API said 'no'\\nwith a second line")

    def test_connection(self):
        raise TimeoutError("no answer from historian.plant:9000 in 5 s")
"""


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "plugins").mkdir()
    return RunContext(run_id="r1", pipeline="p", data_dir=tmp_path, base_dir=tmp_path)


def plugin(ctx, module: str, code: str) -> None:
    (ctx.plugins_dir / f"{module}.py").write_text(textwrap.dedent(code))


def source(ctx, implementation: str, **config):
    cls = registry.get("custom")
    parsed = cls.SourceConfig.model_validate({"implementation": implementation, "config": config})
    return cls.make_source(parsed, ctx, "src")


def sink(ctx, implementation: str, batch_format: str = "polars", **config):
    cls = registry.get("custom")
    parsed = cls.SinkConfig.model_validate(
        {"implementation": implementation, "config": config, "batch_format": batch_format}
    )
    return cls.make_sink(parsed, ctx, "dst")


def test_the_guide_template_works_as_written(ctx):
    plugin(ctx, "shopfloor", GUIDE_TEMPLATE)
    frame = pl.concat(list(source(ctx, "shopfloor.CustomConnector", site="north", rows=4).read()))
    assert frame.to_dicts() == [{"line": f"L{i}", "site": "north", "count": i * 10} for i in range(4)]


def test_the_shipped_template_file_runs_as_is(ctx):
    plugin(ctx, "my_connector", (RESOURCES / "custom_connector.py").read_text())
    frame = pl.concat(list(source(ctx, "my_connector.CustomConnector", rows=5).read()))
    assert frame.height == 5 and frame.columns == ["id", "value"]


def test_limit_and_batch_rows_cut_a_long_list(ctx):
    plugin(ctx, "shopfloor", GUIDE_TEMPLATE)
    batches = list(source(ctx, "shopfloor.CustomConnector", rows=10).read(limit=7, batch_rows=3))
    assert [b.height for b in batches] == [3, 3, 1]


def test_batch_form_yields_arrow_and_polars(ctx):
    plugin(ctx, "meters", BATCHES)
    batches = list(source(ctx, "meters:Meters", batches=3).read())
    assert [b.height for b in batches] == [2, 2, 2]
    assert all(isinstance(b, pl.DataFrame) for b in batches)
    assert pl.concat(batches)["meter"].to_list() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("batch_format", ["polars", "arrow", "records"])
def test_destination_form_commits(ctx, tmp_path, batch_format):
    plugin(ctx, "collector", SINK)
    out = tmp_path / f"out-{batch_format}.parquet"
    s = sink(ctx, "collector.Collector", batch_format=batch_format, out=str(out))
    if batch_format == "records":  # write_batch receives a list of dicts: the class must cope
        plugin(ctx, "collector", SINK.replace("pl.from_arrow(frame)", "pl.from_dicts(frame)"))
        s = sink(ctx, "collector.Collector", batch_format=batch_format, out=str(out))
    s.open()
    s.write(pl.DataFrame({"a": [1, 2]}))
    s.write(pl.DataFrame({"a": [3]}))
    s.close()
    assert pl.read_parquet(out)["a"].to_list() == [1, 2, 3]
    log = Path(str(out) + ".log").read_text().split()
    expected = {"polars": "polars", "arrow": "pyarrow", "records": "builtins"}[batch_format]
    assert log == ["connect", "write", expected, "write", expected, "commit", "close"]


def test_destination_abort_rolls_back_and_a_failed_commit_too(ctx, tmp_path):
    plugin(ctx, "collector", SINK)
    out = tmp_path / "out.parquet"
    s = sink(ctx, "collector.Collector", out=str(out))
    s.open()
    s.write(pl.DataFrame({"a": [1]}))
    s.abort()
    assert not out.exists()
    assert Path(str(out) + ".log").read_text().split()[-2:] == ["rollback", "close"]

    s = sink(ctx, "collector.Collector", out=str(out), fail_on_commit=True)
    s.open()
    s.write(pl.DataFrame({"a": [1]}))
    with pytest.raises(ConnectorError) as err:
        s.close()
    assert str(err.value) == (
        "custom connector collector.Collector: commit() failed: RuntimeError: disk says no"
    )
    assert not out.exists()
    assert Path(str(out) + ".log").read_text().split()[-2:] == ["rollback", "close"]


def test_errors_are_one_line_naming_the_class(ctx):
    plugin(ctx, "broken", BROKEN)
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, "broken.Broken").read())
    assert str(err.value) == (
        "custom connector broken.Broken: fetch_data() failed: "
        "ValueError: the API said 'no' with a second line"
    )
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, "broken.Broken", where="connect").read())
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("custom connector broken.Broken: connect() failed: ")
    assert "Connection refused by historian.plant:9000" in str(err.value)


def test_test_connection_uses_test_connection_or_connect_and_close(ctx):
    plugin(ctx, "broken", BROKEN)
    with pytest.raises(
        ConnectorError, match=r"^custom connector broken.Broken: test_connection\(\) failed: "
    ):
        source(ctx, "broken.Broken").check()
    plugin(ctx, "collector", SINK)
    out = ctx.data_dir / "probe"
    sink(ctx, "collector.Collector", out=str(out)).check()
    assert Path(str(out) + ".log").read_text().split() == ["connect", "close"]


def test_only_classes_from_the_plugins_folder_load(ctx, tmp_path):
    # a module on sys.path (os, json) or beside the spec is never imported: plugins/ only
    (tmp_path / "beside.py").write_text(GUIDE_TEMPLATE)
    for ref in ("os.PathLike", "json.JSONDecoder", "beside.CustomConnector"):
        with pytest.raises(ConnectorError) as err:
            list(source(ctx, ref).read())
        module = ref.split(".")[0]
        assert str(err.value) == (
            f"custom connector {ref}: plugin module '{module}.py' not found in {ctx.plugins_dir}"
        )
    for bad in ("os.path.join", "../evil.Class", "plugins/x.Y", "__import__('os')", "Class"):
        with pytest.raises(ValidationError, match=r"implementation must be 'module\.Class'"):
            CustomSourceConfig.model_validate({"implementation": bad})
    plugin(ctx, "shopfloor", GUIDE_TEMPLATE)
    with pytest.raises(ConnectorError, match="has no class 'Missing'"):
        list(source(ctx, "shopfloor.Missing").read())


def test_a_wrong_return_type_is_one_line(ctx):
    plugin(
        ctx, "odd", "class Odd:\n    def __init__(self, config): pass\n    def fetch_data(self): return 42\n"
    )
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, "odd.Odd").read())
    assert str(err.value) == (
        "custom connector odd.Odd: fetch_data() returned int; expected a list of dicts, "
        "a Polars DataFrame or an Arrow table"
    )


def test_a_pipeline_runs_custom_source_to_custom_destination(tmp_path):
    data = tmp_path / "data"
    with Workspace(data) as ws:
        plugin_dir = data / "plugins"
        (plugin_dir / "shopfloor.py").write_text(GUIDE_TEMPLATE)
        (plugin_dir / "collector.py").write_text(SINK)
        out = tmp_path / "out.parquet"
        doc = {
            "spec_version": 1,
            "name": "custom",
            "nodes": [
                {
                    "id": "src",
                    "kind": "source",
                    "connector_type": "custom",
                    "config": {"implementation": "shopfloor.CustomConnector", "config": {"rows": 6}},
                },
                {
                    "id": "dst",
                    "kind": "destination",
                    "inputs": ["src"],
                    "connector_type": "custom",
                    "config": {"implementation": "collector.Collector", "config": {"out": str(out)}},
                },
            ],
        }
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert record["rows_out"] == 6
        assert pl.read_parquet(out)["count"].to_list() == [0, 10, 20, 30, 40, 50]

        (plugin_dir / "shopfloor.py").write_text(BROKEN.replace("class Broken", "class CustomConnector"))
        out.unlink()
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        assert (
            "custom connector shopfloor.CustomConnector: fetch_data() failed: ValueError" in record["error"]
        )
        assert "\n" not in record["error"]
        assert not out.exists()


def test_arrow_record_batches_are_accepted(ctx):
    plugin(
        ctx,
        "rb",
        "import pyarrow as pa\nclass R:\n    def __init__(self, config): pass\n"
        "    def fetch_batches(self):\n        yield pa.record_batch({'x': [1, 2, 3]})\n",
    )
    batches = list(source(ctx, "rb.R").read())
    assert batches[0].to_arrow().equals(pa.table({"x": pa.array([1, 2, 3], pa.int64())}))


def test_test_connection_through_the_engine_api(tmp_path):
    from engine.api import LocalEngine

    engine = LocalEngine(tmp_path / "data")
    try:
        plugins = tmp_path / "data" / "plugins"
        (plugins / "shopfloor.py").write_text(GUIDE_TEMPLATE)
        (plugins / "broken.py").write_text(BROKEN)
        ok = engine.connectors.test(
            "custom", "source", {"implementation": "shopfloor.CustomConnector"}
        ).result(30)
        assert ok["ok"] is True, ok
        bad = engine.connectors.test("custom", "source", {"implementation": "broken.Broken"}).result(30)
        assert bad["ok"] is False
        assert bad["error"] == (
            "custom connector broken.Broken: test_connection() failed: "
            "no answer from historian.plant:9000 in 5 s"  # an OSError's text says what it is
        )
        schema = engine.connectors.schema("custom", "destination")
        assert {"implementation", "config", "batch_format"} <= set(schema["properties"])
    finally:
        engine.close()


def test_ragged_columns_are_one_line(ctx):
    plugin(
        ctx,
        "ragged",
        "class R:\n    def __init__(self, config): pass\n"
        "    def fetch_batches(self):\n        yield {'a': [1, 2], 'b': [1]}\n",
    )
    with pytest.raises(ConnectorError) as err:
        list(source(ctx, "ragged.R").read())
    assert str(err.value) == (
        "custom connector ragged.R: fetch_batches() returned data that is not a table: could not create "
        "a new DataFrame: height of column 'b' (1) does not match height of column 'a' (2)"
    )


def test_the_guide_form_with_implementation_on_the_node_runs_too(tmp_path):
    """The user guide writes `implementation` on the node (linear form here), beside `config`."""
    from engine.errors import SpecError

    data = tmp_path / "data"
    with Workspace(data) as ws:
        (data / "plugins" / "shopfloor.py").write_text(GUIDE_TEMPLATE)
        (data / "plugins" / "collector.py").write_text(SINK)
        out = tmp_path / "out.parquet"
        doc = {
            "name": "guide form",
            "sources": [
                {
                    "name": "src",
                    "connector_type": "custom",
                    "implementation": "shopfloor.CustomConnector",
                    "config": {"config": {"rows": 3}},
                }
            ],
            "destinations": [
                {
                    "name": "dst",
                    "connector_type": "custom",
                    "implementation": "collector.Collector",
                    "config": {"config": {"out": str(out)}},
                }
            ],
        }
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
        assert pl.read_parquet(out)["count"].to_list() == [0, 10, 20]

        doc["sources"][0]["connector_type"] = "file"
        with pytest.raises(SpecError) as err:
            validate(doc)
        assert "sources[0]" in str(err.value) and "custom connector" in str(err.value)
