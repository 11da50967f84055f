"""`RunsAPI` over the service: runs and previews as `Job`s, the run history as reads.

A run: `POST /runs` (the document, with its spec path and base folder as this client resolved
them) starts it in the service and answers its job id; the job's future completes when the job's
result route (`GET /jobs/{id}/result?wait=S`, a long poll) says it is done, with the same run record
a local run gives (`nodes`, `_targets`). Its events (progress, source states, retries, stream
statistics) reach this client's subscribers through the event stream, tagged with the job id.
`Job.cancel()` calls `POST /jobs/{id}/stop`: the service stops the stream or cancels the run.

A preview: `POST /preview?arrow=true` answers each port's rows as an Arrow IPC stream (base64), so
the frames come back with their own types (a local preview and a remote one print the same).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import threading
from pathlib import Path
from typing import Any

from engine.api.core import Job
from engine.api.protocol import RunFilter
from engine.api.remote.client import RemoteError, ServiceClient, ServiceUnavailable
from engine.api.remote.wire import when

RESULT_POLL_S = 10.0  # the long poll of a job's result: the service answers at once when it ends


class RemoteJob(Job):
    """A job running in the service: its id is the service's, `cancel()` stops it there."""

    def __init__(self, client: ServiceClient, job_id: str, kind: str, future: concurrent.futures.Future):
        super().__init__(kind, future, threading.Event())
        self.id = job_id
        self._client = client

    def cancel(self) -> None:
        first = not self.cancel_event.is_set()
        self.cancel_event.set()
        if first and not self.future.done():
            with contextlib.suppress(RemoteError):  # ended meanwhile: nothing to stop
                self._client.post(f"/jobs/{self.id}/stop")


def _filter_params(f: RunFilter) -> dict[str, Any]:
    return {
        "pipeline": f.pipeline,
        "status": f.status,
        "since": when(f.since),
        "until": when(f.until),
        "limit": f.limit,
    }


class RemoteRuns:
    def __init__(self, client: ServiceClient):
        self._client = client

    # ---- jobs --------------------------------------------------------------------------------
    def _follow(self, job_id: str, kind: str) -> RemoteJob:
        """A job whose future gets the service job's result (or its error)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        job = RemoteJob(self._client, job_id, kind, future)

        def wait() -> None:
            try:
                while True:
                    answer = self._client.get(f"/jobs/{job_id}/result", wait=RESULT_POLL_S)
                    if answer.get("done"):
                        future.set_result(answer.get("result"))
                        return
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc)

        threading.Thread(target=wait, name=f"remote-job-{job_id}", daemon=True).start()
        return job

    def start(
        self,
        doc: dict[str, Any],
        spec_path: str | Path | None = None,
        base_dir: str | Path | None = None,
        trigger: str = "manual",
        seconds: float | None = None,
    ) -> Job[dict[str, Any]]:
        answer = self._client.post(
            "/runs",
            doc,
            spec_path=str(Path(spec_path).resolve()) if spec_path else None,
            base_dir=str(Path(base_dir).resolve()) if base_dir else None,
            trigger=trigger,
            seconds=seconds,
        )
        return self._follow(answer["job_id"], answer.get("kind") or "run")

    def stop(self, job_id: str) -> bool:
        from engine.errors import DataError

        try:
            self._client.post(f"/jobs/{job_id}/stop")
        except DataError:
            return False
        return True

    def rerun(self, run_id: str, base_dir: str | Path | None = None) -> Job[dict[str, Any]]:
        """`POST /runs/{id}/rerun`: the service runs the version that run ran (an unknown run is a
        DataError at once). `base_dir` is a folder on the service's machine."""
        from urllib.parse import quote

        answer = self._client.post(
            f"/runs/{quote(run_id, safe='')}/rerun",
            base_dir=str(Path(base_dir).resolve()) if base_dir else None,
        )
        return self._follow(answer["job_id"], answer.get("kind") or "run")

    def jobs(self) -> list[Job[Any]]:
        out = []
        for item in self._client.get("/jobs"):
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            out.append(RemoteJob(self._client, item["id"], item.get("kind") or "run", future))
        return out

    # ---- preview -----------------------------------------------------------------------------
    def preview(
        self,
        doc: dict[str, Any],
        node_id: str | None = None,
        limit: int = 100,
        base_dir: str | Path | None = None,
    ) -> Job:
        cancel = threading.Event()

        def work():
            answer = self._client.post(
                "/preview",
                doc,
                node=node_id,
                limit=limit,
                base_dir=str(Path(base_dir).resolve()) if base_dir else None,
                arrow="true",
            )
            return preview_result(answer)

        return Job("preview", self._client.call(work), cancel)

    # ---- history -----------------------------------------------------------------------------
    def list(self, filter: RunFilter | None = None) -> list[dict[str, Any]]:
        return self._client.get("/runs", **_filter_params(filter or RunFilter()))

    def pipeline_names(self) -> list[str]:
        return sorted({r["pipeline"] for r in self.list(RunFilter(limit=10_000)) if r.get("pipeline")})

    def overview(self, filter: RunFilter | None = None) -> dict[str, Any]:
        return {"runs": self.list(filter), "pipelines": self.pipeline_names()}

    def nodes(self, run_id: str) -> list[dict[str, Any]]:
        return self._client.get(f"/runs/{run_id}", rejects=0).get("nodes") or []

    def detail(self, run_id: str) -> dict[str, Any]:
        import polars as pl

        got = self._client.get(f"/runs/{run_id}")
        rejects = got.get("rejects") or {}
        frame = pl.DataFrame(rejects.get("rows") or [])  # no rejects: an empty frame, as a local engine gives
        return {
            "record": got["record"],
            "nodes": got.get("nodes") or [],
            "logs": got.get("logs") or [],
            "rejects": frame,
        }


def preview_result(answer: dict[str, Any]):
    """The `PreviewResult` of a `/preview?arrow=true` answer."""
    import io

    import polars as pl

    from engine.api.runs import PortPreview, PreviewResult

    result = PreviewResult(
        answer.get("node"),
        stats=answer.get("stats") or {},
        live_sampled=list(answer.get("live_sampled") or []),
        live_problems=dict(answer.get("live_problems") or {}),
    )
    for port in answer.get("ports") or []:
        if "arrow" not in port:
            raise ServiceUnavailable(
                "the service answered a preview without Arrow frames (an older service?)"
            )
        frame = pl.read_ipc_stream(io.BytesIO(base64.b64decode(port["arrow"])))
        result.ports[(port["node"], port["port"])] = PortPreview(
            port["node"], port["port"], frame, int(port.get("rows_total") or 0)
        )
    return result
