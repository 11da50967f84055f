"""The `aws_s3` connector against moto's standalone S3 server on 127.0.0.1 (there is no real S3
here): globs, gzip, CSV/Parquet/NDJSON through the `file` formats, atomic writes, credentials as
secrets, test connection and one-line errors."""

from __future__ import annotations

import gzip
import io
import socket

import boto3
import polars as pl
import pytest
from moto import server as moto_server
from pydantic import ValidationError

from engine.connectors import registry
from engine.context import RunContext
from engine.errors import AggregatorError, ConnectorError, DataError
from engine.runner import run_pipeline
from engine.spec.plan import mask_secrets
from engine.spec.validate import validate
from engine.workspace import Workspace

KEY_ID, SECRET = "AKIAEXAMPLE", "s3cr3t-Value-never-shown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


_buckets = iter(range(10_000))


@pytest.fixture
def bucket(endpoint):
    name = f"plant-{next(_buckets)}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def ctx(tmp_path):
    logs: list[tuple[str, str]] = []
    c = RunContext(
        run_id="r1",
        pipeline="p",
        data_dir=tmp_path,
        base_dir=tmp_path,
        secret={"s3_secret": SECRET}.__getitem__,
        log=lambda level, msg, node=None: logs.append((level, msg)),
    )
    c.logs = logs  # type: ignore[attr-defined]
    return c


def base(endpoint, bucket, **config):
    return {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "access_key_id": KEY_ID,
        "secret_access_key": {"secret": "s3_secret"},
        "retry_attempts": 0,
        **config,
    }


def source(ctx, raw):
    cls = registry.get("aws_s3")
    return cls.make_source(cls.SourceConfig.model_validate(ctx.resolve_config(raw)), ctx, "src")


def sink(ctx, raw):
    cls = registry.get("aws_s3")
    return cls.make_sink(cls.SinkConfig.model_validate(ctx.resolve_config(raw)), ctx, "dst")


def read(ctx, raw, **kw) -> pl.DataFrame:
    return pl.concat(list(source(ctx, raw).read(**kw)), how="diagonal_relaxed")


def put(endpoint, bucket, key, body: bytes) -> None:
    client(endpoint).put_object(Bucket=bucket, Key=key, Body=body)


def get(endpoint, bucket, key) -> bytes:
    return client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(endpoint, bucket) -> list[str]:
    found = client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in found)


def test_reads_one_csv_key(ctx, endpoint, bucket):
    put(endpoint, bucket, "in/a.csv", b"id,name\n1,x\n2,y\n")
    frame = read(ctx, base(endpoint, bucket, key="in/a.csv"))
    assert frame.to_dicts() == [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]


def test_globs_match_like_the_file_connector(ctx, endpoint, bucket):
    for key, n in [("d/2024/a.csv", 1), ("d/2024/b.csv", 2), ("d/2024/sub/c.csv", 3), ("d/2024/.tmp.csv", 9)]:
        put(endpoint, bucket, key, f"n\n{n}\n".encode())
    put(endpoint, bucket, "d/2024/notes.txt", b"ignored")
    one_level = read(ctx, base(endpoint, bucket, path="d/2024/*.csv"))
    assert one_level["n"].to_list() == [1, 2]  # not sub/, not the hidden key, not .txt
    deep = read(ctx, base(endpoint, bucket, prefix="d", path="**/*.csv"))
    assert deep["n"].to_list() == [1, 2, 3]
    chars = read(ctx, base(endpoint, bucket, path="d/202?/[ab].csv"))
    assert chars["n"].to_list() == [1, 2]
    everything = read(ctx, base(endpoint, bucket, prefix="d/2024/sub/", format="csv"))
    assert everything["n"].to_list() == [3]
    folder = read(ctx, base(endpoint, bucket, prefix="d/2024", format="csv"))  # no trailing slash
    assert sorted(folder["n"].to_list()) == [1, 2, 3]  # notes.txt is read as CSV too (a header, no rows)
    with pytest.raises(ConnectorError) as err:
        read(ctx, base(endpoint, bucket, path="d/*.parquet"))
    assert str(err.value) == f"aws_s3 s3://{bucket}/d/*.parquet (host {endpoint}): no object matches"


def test_gzip_csv_and_ndjson(ctx, endpoint, bucket):
    put(endpoint, bucket, "z/a.csv.gz", gzip.compress(b"a;b\n1;2\n3;4\n"))
    put(endpoint, bucket, "z/b.ndjson.gz", gzip.compress(b'{"a": 1, "t": "x"}\n{"a": 2, "t": "y"}\n'))
    frame = read(ctx, base(endpoint, bucket, key="z/a.csv.gz", options={"delimiter": ";"}))
    assert frame.to_dicts() == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    frame = read(ctx, base(endpoint, bucket, key="z/b.ndjson.gz"))
    assert frame.to_dicts() == [{"a": 1, "t": "x"}, {"a": 2, "t": "y"}]
    put(endpoint, bucket, "z/bad.csv.gz", b"not gzip at all")
    with pytest.raises(DataError) as err:
        read(ctx, base(endpoint, bucket, key="z/bad.csv.gz"))
    assert str(err.value).startswith(f"s3://{bucket}/z/bad.csv.gz: not a valid gzip file")


def test_parquet_read_with_limit_and_batches(ctx, endpoint, bucket):
    buf = io.BytesIO()
    pl.DataFrame({"i": range(1000), "v": [0.5] * 1000}).write_parquet(buf)
    put(endpoint, bucket, "p/x.parquet", buf.getvalue())
    batches = list(source(ctx, base(endpoint, bucket, key="p/x.parquet")).read(limit=250, batch_rows=100))
    assert sum(b.height for b in batches) == 250
    assert pl.concat(batches)["i"].to_list() == list(range(250))


def test_declared_types_and_bad_data_name_the_object(ctx, endpoint, bucket):
    put(endpoint, bucket, "t/a.csv", b"id,when\n1,2024-01-02\n2,yesterday\n")
    with pytest.raises(DataError) as err:
        read(ctx, base(endpoint, bucket, key="t/a.csv", schema={"when": "date"}))
    text = str(err.value)
    assert text.startswith(f"s3://{bucket}/t/a.csv") and "when" in text and "\n" not in text
    assert "aggregator-s3-" not in text  # never our temporary file


@pytest.mark.parametrize(
    ("key", "decode"),
    [
        ("out/r.parquet", lambda b: pl.read_parquet(io.BytesIO(b))),
        ("out/r.csv", lambda b: pl.read_csv(io.BytesIO(b))),
        ("out/r.ndjson.gz", lambda b: pl.read_ndjson(io.BytesIO(gzip.decompress(b)))),
    ],
)
def test_writes_each_format(ctx, endpoint, bucket, key, decode):
    s = sink(ctx, base(endpoint, bucket, key=key))
    s.open()
    s.write(pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    s.write(pl.DataFrame({"a": [3], "b": ["z"]}))
    assert keys(endpoint, bucket) == []  # nothing visible before the commit
    s.close()
    assert keys(endpoint, bucket) == [key]
    assert decode(get(endpoint, bucket, key)).to_dicts() == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 3, "b": "z"},
    ]
    assert read(ctx, base(endpoint, bucket, key=key))["a"].to_list() == [1, 2, 3]  # round trip


def test_append_mode_keeps_the_old_rows(ctx, endpoint, bucket):
    put(endpoint, bucket, "log/r.csv", b"a\n1\n")
    s = sink(ctx, base(endpoint, bucket, key="log/r.csv", mode="append"))
    s.open()
    s.write(pl.DataFrame({"a": [2]}))
    s.close()
    assert get(endpoint, bucket, "log/r.csv") == b"a\n1\n2\n"


def test_a_failed_run_leaves_no_object_and_the_old_one_intact(ctx, endpoint, bucket):
    s = sink(ctx, base(endpoint, bucket, key="out/new.parquet"))
    s.open()
    s.write(pl.DataFrame({"a": [1]}))
    s.abort()
    assert keys(endpoint, bucket) == []

    put(endpoint, bucket, "out/old.csv", b"a\nold\n")
    s = sink(ctx, base(endpoint, bucket, key="out/old.csv"))
    s.open()
    s.write(pl.DataFrame({"a": ["new"]}))
    s.publish()  # committed, but a later destination of the run fails: taken back
    assert get(endpoint, bucket, "out/old.csv") == b"a\nnew\n"
    s.unpublish()
    assert get(endpoint, bucket, "out/old.csv") == b"a\nold\n"
    assert keys(endpoint, bucket) == ["out/old.csv"]  # the kept copy is gone too

    s = sink(ctx, base(endpoint, bucket, key="out/fresh.csv"))
    s.open()
    s.write(pl.DataFrame({"a": [1]}))
    s.publish()
    s.unpublish()
    assert keys(endpoint, bucket) == ["out/old.csv"]


def test_a_failed_pipeline_run_writes_nothing(endpoint, bucket, tmp_path):
    (tmp_path / "in.csv").write_text("id,v\n1,a\n2,b\n")
    with Workspace(tmp_path / "data") as ws:
        ws.secrets.set("s3_secret", SECRET, use_keyring=False)
        (tmp_path / "data" / "plugins" / "steps.py").write_text(
            "def same(df):\n    return df\n\ndef boom(df):\n    raise ValueError('boom')\n"
        )

        def doc(broken: bool) -> dict:
            return {
                "spec_version": 1,
                "name": "to-s3",
                "nodes": [
                    {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": "in.csv"}},
                    {
                        "id": "cast",
                        "kind": "transform",
                        "inputs": ["src"],
                        "transform": {"type": "python", "function": "steps:boom" if broken else "steps:same"},
                    },
                    {
                        "id": "dst",
                        "kind": "destination",
                        "inputs": ["cast"],
                        "connector_type": "aws_s3",
                        "config": base(endpoint, bucket, key="exports/orders.parquet"),
                    },
                ],
            }

        record = run_pipeline(validate(doc(broken=True)), ws, base_dir=tmp_path)
        assert record["status"] == "failed"
        assert keys(endpoint, bucket) == []
        record = run_pipeline(validate(doc(broken=False)), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
    assert pl.read_parquet(io.BytesIO(get(endpoint, bucket, "exports/orders.parquet")))["id"].to_list() == [
        1,
        2,
    ]


def test_secrets_resolve_and_clear_text_warns(ctx, endpoint, bucket):
    put(endpoint, bucket, "s.csv", b"a\n1\n")
    model = registry.get("aws_s3").SourceConfig
    # as a run has it: checked with the reference masked, the value put in place afterwards
    assert model.model_validate(mask_secrets(base(endpoint, bucket, key="s.csv"))).clear_secrets() == []
    assert read(ctx, base(endpoint, bucket, key="s.csv"))["a"].to_list() == [1]  # the resolved secret works
    ctx.logs.clear()
    read(ctx, base(endpoint, bucket, key="s.csv", secret_access_key=SECRET))
    warnings = [m for level, m in ctx.logs if level == "warning"]
    assert warnings == [
        "secret_access_key given in clear text: store it as a secret and write "
        '{"secret": "NAME"} in its place'
    ]
    issues = validate(
        {
            "spec_version": 1,
            "name": "x",
            "nodes": [
                {
                    "id": "s",
                    "kind": "source",
                    "connector_type": "aws_s3",
                    "config": base(endpoint, bucket, key="s.csv"),
                },
                {
                    "id": "d",
                    "kind": "destination",
                    "inputs": ["s"],
                    "connector_type": "file",
                    "config": {"path": "o.csv"},
                },
            ],
        }
    )
    assert issues is not None  # a secret reference validates as text


def test_unreachable_endpoint_is_one_line_with_the_host_and_no_secret(ctx, bucket):
    dead = f"http://127.0.0.1:{free_port()}"
    raw = base(dead, bucket, key="a.csv", connection_timeout=2)
    for endpoint_call in (lambda: source(ctx, raw).check(), lambda: sink(ctx, raw).check()):
        with pytest.raises(ConnectorError) as err:
            endpoint_call()
        text = str(err.value)
        assert "\n" not in text and SECRET not in text
        assert text.startswith("aws_s3 ") and f"(host {dead})" in text


def test_test_connection(ctx, endpoint, bucket):
    put(endpoint, bucket, "here.csv", b"a\n1\n")
    source(ctx, base(endpoint, bucket, key="here.csv")).check()
    with pytest.raises(
        ConnectorError,
        match=r"^aws_s3 s3://plant-\d+/gone\.csv \(host http://127\.0\.0\.1:\d+\): object not found$",
    ):
        source(ctx, base(endpoint, bucket, key="gone.csv")).check()
    sink(ctx, base(endpoint, bucket, key="reports/r.parquet")).check()
    assert keys(endpoint, bucket) == ["here.csv"]  # the probe object is deleted
    with pytest.raises(ConnectorError) as err:
        sink(ctx, base(endpoint, "no-such-bucket", key="r.parquet")).check()
    text = str(err.value)
    assert "\n" not in text and text.startswith("aws_s3 writing s3://no-such-bucket/.aggregator-probe-")
    assert text.endswith("HTTP 404 Not Found, NoSuchBucket: The specified bucket does not exist")


def test_config_errors():
    model = registry.get("aws_s3").SinkConfig
    cases = {
        "a destination's key cannot be a glob": {"bucket": "abc", "key": "x/*.csv"},
        "a destination needs `key`": {"bucket": "abc", "prefix": "x/", "format": "csv"},
        "give key or path, not both": {"bucket": "abc", "key": "a.csv", "path": "b.csv"},
        "bucket must be 3-63 characters": {"bucket": "Bad_Bucket", "key": "a.csv"},
        "cannot tell the file format": {"bucket": "abc", "key": "a.bin"},
        "options.sheet applies to excel files, not csv": {
            "bucket": "abc",
            "key": "a.csv",
            "options": {"sheet": 1},
        },
        "endpoint_url must start with http": {"bucket": "abc", "key": "a.csv", "endpoint_url": "minio:9000"},
    }
    for message, raw in cases.items():
        with pytest.raises(ValidationError, match=message):
            model.model_validate(raw)
    assert isinstance(ConnectorError("x"), AggregatorError)


def test_the_shipped_template_runs_against_the_bucket(endpoint, tmp_path):
    import json
    from pathlib import Path

    template = (
        Path(__file__).resolve().parents[2] / "resources" / "templates" / "s3_exports_to_historian.json"
    )
    doc = json.loads(template.read_text())
    for node in doc["nodes"]:
        if node.get("connector_type") == "aws_s3":
            node["config"]["endpoint_url"] = endpoint  # moto instead of AWS; everything else as shipped
    s3 = client(endpoint)
    for name in ("plant-data", "plant-reports"):
        s3.create_bucket(Bucket=name)
    day = b"meter,ts,kwh\nm1,2024-05-01T00:00:00,1.5\nm2,2024-05-01T00:00:00,2.5\n"
    put(endpoint, "plant-data", "exports/line1/2024-05-01/a.csv.gz", gzip.compress(day))
    put(
        endpoint,
        "plant-data",
        "exports/line1/2024-05-02/a.csv.gz",
        gzip.compress(day.replace(b"05-01", b"05-02")),
    )
    with Workspace(tmp_path / "data") as ws:
        ws.secrets.set("s3_key_id", KEY_ID, use_keyring=False)
        ws.secrets.set("s3_secret", SECRET, use_keyring=False)
        record = run_pipeline(validate(doc), ws, base_dir=tmp_path)
        assert record["status"] == "success", record["error"]
    clean = pl.read_parquet(io.BytesIO(get(endpoint, "plant-reports", "line1/readings.parquet")))
    assert clean.height == 4 and set(clean["meter"]) == {"m1", "m2"}


def test_test_connection_through_the_engine_api(endpoint, bucket, tmp_path):
    from engine.api import LocalEngine

    engine = LocalEngine(tmp_path / "data")
    try:
        put(endpoint, bucket, "a.csv", b"x\n1\n")
        raw = {**base(endpoint, bucket, key="a.csv"), "secret_access_key": SECRET}
        ok = engine.connectors.test("aws_s3", "source", raw).result(30)
        assert ok["ok"] is True, ok
        bad = engine.connectors.test("aws_s3", "destination", {**raw, "bucket": "missing-bucket"}).result(30)
        assert bad["ok"] is False and bad["error"].endswith(
            "NoSuchBucket: The specified bucket does not exist"
        )
        assert SECRET not in bad["error"]
        issues = engine.connectors.check("aws_s3", "source", raw)
        assert {
            "path": "secret_access_key",
            "message": "a secret in clear: store it as a secret and pick its name",
        } in issues
    finally:
        engine.close()


def test_local_temporary_files_are_recorded_and_gone_afterwards(ctx, endpoint, bucket):
    from pathlib import Path

    live: dict[str, int] = {}

    def track(kind, location, name=None):
        live[location] = live.get(location, 0) + 1
        return lambda: live.__setitem__(location, live[location] - 1)

    ctx.track = track
    put(endpoint, bucket, "e/empty.csv", b"")
    put(endpoint, bucket, "e/full.csv.gz", gzip.compress(b"a\n1\n"))
    assert read(ctx, base(endpoint, bucket, path="e/*", format="csv"))["a"].to_list() == [1]
    assert ("warning", f"s3://{bucket}/e/empty.csv: empty object, no rows") in ctx.logs
    s = sink(ctx, base(endpoint, bucket, key="e/out.csv.gz"))
    s.open()
    s.write(pl.DataFrame({"a": [1]}))
    s.close()
    s = sink(ctx, base(endpoint, bucket, key="e/out2.csv"))
    s.open()
    s.abort()
    assert live and all(count == 0 for count in live.values())
    assert not any(Path(p).exists() for p in live)
    assert all(Path(p).is_relative_to(ctx.data_dir / "tmp") for p in live)  # staged in the data dir
