"""S3 client benchmark (issue 13, `aws_s3`): how the two candidate libraries move one object up and
down against moto's standalone S3 server on 127.0.0.1 (there is no real S3 here), in the same run:
obstore (Rust object_store, one wheel, no Python dependencies) and s3fs (fsspec + aiobotocore +
botocore + aiohttp), plus the import time each costs a process.

    python tests/benchmarks/bench_s3.py [--mb 64] [--repeats 3] [--rows 1000000]

s3fs is not a dependency of the project (that is the point): install it into the venv by hand for
this comparison (`.venv/bin/pip install s3fs`; pandas comes with the dev extra).

Both talk to the same server, so the server's own speed (moto is Python) bounds both; the figure
that separates them is the client's CPU and its import cost. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def connector_legs(endpoint: str, store, rows: int, repeats: int) -> dict:
    """Rows/s through our aws_s3 source and destination vs Polars' own object-store reader/writer
    (`pl.read_parquet("s3://...")`, what a Polars user would pick) and pandas via s3fs."""
    import io

    import obstore
    import polars as pl

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from engine.connectors import registry
    from engine.context import RunContext

    frame = pl.DataFrame(
        {
            "id": range(rows),
            "meter": [f"m{i % 500}" for i in range(rows)],
            "ts": pl.datetime_range(
                pl.datetime(2024, 1, 1),
                pl.datetime(2024, 1, 1) + pl.duration(seconds=rows - 1),
                "1s",
                eager=True,
            ),
            "kwh": [i * 0.25 for i in range(rows)],
            "ok": [i % 3 == 0 for i in range(rows)],
            "site": ["north"] * rows,
        }
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    obstore.put(store, "rows.parquet", buf.getvalue())
    csv = io.BytesIO()
    frame.write_csv(csv)
    obstore.put(store, "rows.csv", csv.getvalue())
    creds = {"access_key_id": "testing", "secret_access_key": "testing"}
    options = {
        "aws_endpoint_url": endpoint,
        "aws_region": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_allow_http": "true",
    }
    cls = registry.get("aws_s3")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(data_dir=Path(tmp), base_dir=Path(tmp))

        def ours_read(key: str) -> int:
            cfg = cls.SourceConfig.model_validate(
                {"bucket": "bench", "key": key, "endpoint_url": endpoint, **creds}
            )
            return sum(b.height for b in cls.make_source(cfg, ctx, "s").read())

        def ours_write() -> int:
            cfg = cls.SinkConfig.model_validate(
                {"bucket": "bench", "key": "out/ours.parquet", "endpoint_url": endpoint, **creds}
            )
            sink = cls.make_sink(cfg, ctx, "d")
            sink.open()
            for part in frame.iter_slices(300_000):
                sink.write(part)
            sink.close()
            return rows

        def polars_write() -> int:
            frame.write_parquet("s3://bench/out/polars.parquet", storage_options=options)
            return rows

        def pandas_read_csv() -> int:
            import pandas as pd

            so = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
            return len(pd.read_csv("s3://bench/rows.csv", storage_options=so))

        legs = {
            "aws_s3_source_parquet": lambda: ours_read("rows.parquet"),
            "polars_read_parquet_s3": lambda: (
                pl.read_parquet("s3://bench/rows.parquet", storage_options=options).height
            ),
            "aws_s3_source_csv": lambda: ours_read("rows.csv"),
            "polars_read_csv_s3": lambda: pl.read_csv("s3://bench/rows.csv", storage_options=options).height,
            "pandas_read_csv_s3fs": pandas_read_csv,
            "aws_s3_destination_parquet": ours_write,
            "polars_write_parquet_s3": polars_write,
        }
        out = {}
        for name, leg in legs.items():
            try:
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    n = leg()
                    times.append(time.perf_counter() - t)
                    assert n == rows, (name, n)
                out[name] = {"rows_per_s": round(rows / statistics.median(times))}
            except Exception as exc:  # a leg the installed tools cannot run: say so, go on
                out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    out["rows"] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the connector legs' objects")
    args = ap.parse_args()

    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        import obstore
        import s3fs
        from obstore.store import S3Store

        store = S3Store(
            "bench",
            endpoint=endpoint,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
            client_options={"allow_http": True},
        )
        fs = s3fs.S3FileSystem(
            key="testing",
            secret="testing",
            client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        )
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        payload = os.urandom(args.mb << 20)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src.bin"
            src.write_bytes(payload)
            dst = Path(tmp) / "dst.bin"
            legs = {
                "obstore_put": lambda: obstore.put(store, "o.bin", src),
                "s3fs_put": lambda: fs.put_file(str(src), "bench/s.bin"),
                "obstore_get": lambda: dst.write_bytes(obstore.get(store, "o.bin").bytes()),
                "s3fs_get": lambda: fs.get_file("bench/s.bin", str(dst)),
            }
            results: dict[str, dict] = {}
            for name, leg in legs.items():
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    cpu = time.process_time()
                    leg()
                    times.append((time.perf_counter() - t, time.process_time() - cpu))
                wall = statistics.median(x[0] for x in times)
                results[name] = {
                    "MB_per_s": round(args.mb / wall, 1),
                    "process_cpu_s": round(statistics.median(x[1] for x in times), 3),
                }
        results["connector"] = connector_legs(endpoint, store, args.rows, args.repeats)
        results["import_s"] = {
            "obstore": round(import_seconds("obstore"), 3),
            "s3fs": round(import_seconds("s3fs"), 3),
        }
        results["object_MB"] = args.mb
        results["load_average"] = os.getloadavg()[0]
        print(json.dumps(results, indent=1))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
