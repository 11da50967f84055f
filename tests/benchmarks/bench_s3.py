"""S3 client benchmark (issue 13, `aws_s3`): how the two candidate libraries move one object up and
down against moto's standalone S3 server on 127.0.0.1 (there is no real S3 here), in the same run:
obstore (Rust object_store, one wheel, no Python dependencies) and s3fs (fsspec + aiobotocore +
botocore + aiohttp), plus the import time each costs a process.

    python tests/benchmarks/bench_s3.py [--mb 64] [--repeats 3]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
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
