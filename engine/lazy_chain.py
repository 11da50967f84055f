"""A linear batch chain as ONE Polars lazy query, sunk as a hand-written script would sink it.

`source -> row-local transforms -> destination(s)`, with the `rejected` output of validations going
to the reject store, is run by `pl.collect_all` over every output at once: the kept rows into each
destination (Parquet and CSV files by Polars' own sinks into the destination's temporary file; any
other destination through its ordinary `write()`, fed by `sink_batches`), the rejected rows into the
reject store (by `sink_parquet` into the run's reject file, `RejectFile`, where the historian is not
open; else through the store's writer), and a row count wherever a node may drop rows (that is how
the run record gets the same per-node counts as the push executor's). A cancelled run stops the
query between two of the source's batches (`_Looker`). Polars runs the query on its streaming
engine, with the CSV parsing, the transforms and the Parquet encoding on every core and no Python in
between; the push executor (engine/executor.py) paid a queue hand-off and a collect per batch and node.

Only what the push executor would do the same way takes this path (`chain_of`): one file source
reading one large UTF-8 CSV or Parquet file, transformations whose type is in `LAZY_TYPES`
(row-local, so one pass over the whole file means what a pass per batch means; proved against the
push executor by tests/engine/test_lazy_chain.py), each reading the previous node's `out`, and
destinations all reading the last one. Anything else (joins, splits, blocking or Python nodes, globs,
declared column types, small files) runs on the push executor.

Staging and the commit are the push executor's own (`Executor._commit_all`): nothing is visible
before every output is complete. When the query fails, everything it wrote is aborted and the run is
done again by the push executor, whose errors name the file, line and field (`Executor.execute`):
identical results, at the cost of the failed attempt's time.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.context import NodeContext
from engine.errors import RunCancelled
from engine.executor import ExecutionResult, Executor, NodeStats, _SinkWorker
from engine.spec.plan import Plan
from engine.transforms.base import OUT, REJECTED

LAZY_MIN_BYTES = 32 << 20  # smaller inputs take the push executor: a few batches, nothing to gain
# Row-local types: a pass over the whole input means what a pass per batch means.
LAZY_TYPES = frozenset(
    {
        "field_mapping",
        "field_calculation",
        "field_addition",
        "field_removal",
        "schema_mapping",
        "record_filter",
        "field_validation",
        "hashing",
    }
)
ROW_DROPPING = frozenset({"record_filter", "field_validation"})  # the others keep every row


@dataclass(frozen=True)
class Chain:
    source: str
    steps: tuple[str, ...]  # transformation node ids, in order
    destinations: tuple[str, ...]


def chain_of(plan: Plan) -> Chain | None:
    """The plan as a linear chain the lazy query can run, or None (the push executor runs it)."""
    caps = plan.capabilities
    if caps.real_time or len(caps.sources) != 1 or not caps.destinations:
        return None
    nodes = {n.id: n for n in plan.graph.nodes}
    consumers = plan.consumers()
    steps: list[str] = []
    current = caps.sources[0]
    while True:
        outs = consumers.get(current, [])
        transforms = [c for c, _port, _idx in outs if nodes[c].kind == "transform"]
        if not transforms:
            break
        if len(outs) != 1 or outs[0][1] != OUT:
            return None  # a fork, or a transformation fed by another port
        nid = transforms[0]
        transform = plan.transforms[nid]
        if (
            transform.type not in LAZY_TYPES
            or len(nodes[nid].inputs) != 1
            or not transform.streaming
            or transform.fails_on_reject
        ):
            return None
        steps.append(nid)
        current = nid
    destinations = tuple(c for c, port, _idx in consumers.get(current, []) if port == OUT)
    for nid in destinations:
        if len(nodes[nid].inputs) != 1:
            return None
    if set(destinations) != set(caps.destinations):
        return None  # a destination fed from elsewhere (a rejected port, a mid-chain node)
    for nid in steps:  # rejected rows go to the reject store only, never to a node
        if any(port != OUT for _c, port, _idx in consumers.get(nid, [])):
            return None
    return Chain(caps.sources[0], tuple(steps), destinations)


class LazyChainExecutor(Executor):
    """Runs a `Chain` as one query; the push executor's `execute` is the fallback."""

    def __init__(self, plan: Plan, ctx, chain: Chain, **kwargs: Any):
        super().__init__(plan, ctx, **kwargs)
        self.chain = chain
        self._kwargs = kwargs
        self._reject_lock = threading.Lock()
        self.took_lazy_path = False
        self._feeders: list[_Feeder] = []
        self._parquet_sinks: list[Any] = []  # file destinations a Polars sink writes as Parquet
        self._source_rows: int | None = None  # known before the query (a Parquet file's footer)
        self._csv_sinks: list[Any] = []  # ... and as CSV

    def execute(self) -> ExecutionResult:
        scan = self._scan()
        if scan is None:
            return super().execute()
        try:
            self._run_query(scan)
        except BaseException as exc:  # the push executor says what went wrong, and where
            self._abort_all()
            if isinstance(exc, RunCancelled) or self.ctx.cancel.is_set():
                raise RunCancelled("run cancelled") from None
            self.ctx.log("info", f"one-query run failed ({type(exc).__name__}); run batch by batch")
            Executor.__init__(self, self.c, self.ctx, **self._kwargs)
            return super().execute()
        self.took_lazy_path = True
        try:
            for feeder in self._feeders:
                feeder.finish()
            for worker in self._sinks.values():
                if worker.thread.started:
                    worker.finish()
            for nid in self.chain.destinations:
                self.stats[nid].status = "writing"
            if self._reject_worker is not None:
                self._reject_worker.finish()
            self._commit_all()
        except BaseException:
            self._abort_all()
            raise
        return self.result()

    # ---- the source --------------------------------------------------------------------------
    def _scan(self) -> pl.LazyFrame | None:
        """The source file as a LazyFrame, when it is one large UTF-8 CSV or Parquet file read
        without declared types; else None."""
        from engine.connectors.file import FileSource

        if self.ctx.dry_run or self.sample_rows is not None or self.preview_limit is not None:
            return None
        try:
            source = self._make_source(self.chain.source)
        except Exception:
            return None
        if type(source) is not FileSource or source.config.schema:
            return None
        fmt = source.config.resolved_format
        if fmt not in ("csv", "parquet") or any(c in str(source.config.path) for c in "*?["):
            return None
        try:
            files = source.files()
        except Exception:  # the push executor reports it
            return None
        path = files[0]
        try:
            if len(files) != 1 or path.stat().st_size < LAZY_MIN_BYTES:
                return None
        except OSError:
            return None
        if fmt == "parquet":
            scan = pl.scan_parquet(path, glob=False)
            self._source_rows = int(scan.select(pl.len()).collect().item())  # from the footer
            return scan
        from engine.connectors.formats import csv as csv_format

        opts = source._options()
        from engine.connectors.formats.common import is_utf8

        if not is_utf8(opts.encoding) or csv_format._cr_only(path):
            return None
        return csv_format._scan(path, opts)

    # ---- the query ---------------------------------------------------------------------------
    def _run_query(self, scan: pl.LazyFrame) -> None:
        """Every output in one `collect_all`, from ONE read of the source: Polars shares a
        subplan between outputs only where it sees it (the largest common one; what lies inside it
        was read and transformed again for each other output that needed it), so the frames that
        several outputs take are cached (`.cache()`: here after a counted filter, in
        `field_validation` for its two ports); tests/engine/test_lazy_chain.py checks the plan.
        Row counts come from what the outputs wrote (the kept rows, the rejects), from the source's
        rows (a Parquet file's footer; a CSV file's, counted by `_Looker` as its batches enter the
        query), and from a count inside the query after each `record_filter` but the last, where
        nothing else tells how many rows went on."""
        t0 = time.perf_counter()
        source = self.chain.source
        raw = scan
        looker = _Looker(self.ctx.cancel)
        scan = looker.on(scan, count=self._source_rows is None)
        filters = [nid for nid in self.chain.steps if self.c.transforms[nid].type == "record_filter"]
        rejected: dict[str, pl.LazyFrame] = {}
        counted: list[tuple[str, pl.LazyFrame]] = []
        lf = scan
        for nid in self.chain.steps:
            transform = self.c.transforms[nid]
            ports = transform.apply([lf], NodeContext(self.ctx, nid, source))
            lf = ports[OUT]
            if REJECTED in ports:
                rejected[nid] = ports[REJECTED]
            if nid in filters[:-1]:  # cached: shared by the count and what follows (one read)
                lf = lf.cache()
                counted.append((nid, lf.select(pl.len())))
        queries: list[pl.LazyFrame] = []
        for nid in self.chain.destinations:
            queries.append(self._destination_query(nid, lf))
        final = self._counting_feeder()
        reject_rows = {nid: 0 for nid in rejected}
        reject_file = self._reject_file() if rejected else None
        parts: dict[str, Any] = {}
        for nid, frame in rejected.items():
            if reject_file is None:  # into the table or a dead-letter file, through their writer
                queries.append(frame.sink_batches(self._on_rejects(nid, reject_rows), lazy=True))
                continue
            from engine.store.historian import reject_rows as as_reject_rows

            parts[nid] = reject_file.new_part()
            rows = as_reject_rows(frame, node_id=nid, run_id=self.ctx.run_id, pipeline=self.ctx.pipeline)
            queries.append(rows.sink_parquet(parts[nid], lazy=True))
        n_sinks = len(queries)
        everything = [*queries, *(q for _nid, q in counted)]
        if self._source_rows is None and not _reads_once(everything):
            # The batches `_Looker` counts would pass more than once: count the file on its own.
            self._source_rows = int(raw.select(pl.len()).collect().item())
        results = pl.collect_all(everything)
        counts = {nid: int(frame.item()) for (nid, _q), frame in zip(counted, results[n_sinks:], strict=True)}
        if self.ctx.cancel.is_set():
            raise RunCancelled("run cancelled")
        for nid, path in parts.items():
            reject_rows[nid] = reject_file.adopt(path)  # type: ignore[union-attr]
        source_rows = looker.rows if self._source_rows is None else self._source_rows
        kept = final.rows if final is not None else None
        self._count(source_rows, counts, kept, reject_rows, time.perf_counter() - t0)

    def _open_reject_store(self) -> None:
        """A run whose process has not opened the historian writes its rejects as one Parquet file
        (`RejectFile`), folded into the historian's `_rejects` table by the next process that opens
        it: opening DuckDB only for them cost a 1 M-row run ~0.13 CPU-s (import, connect, insert,
        COMMIT, the checkpoint at close). Where the historian is open already (a DuckDB destination
        opened it, a service's stream), the rejects go into the table as before (`RejectWriter`);
        so does a dead-letter file (`dead_letter_queue.storage`). The push executor's fallback of a
        failed query is this class too, and takes the same way."""
        from engine.store.historian import RejectFile

        if not self._rejects_to_file():
            super()._open_reject_store()
            return
        writer = RejectFile(
            self.ctx.historian, run_id=self.ctx.run_id, pipeline=self.ctx.pipeline, track=self.ctx.track
        )
        self._reject_worker = _SinkWorker(writer, NodeStats("rejects"))  # type: ignore[arg-type]
        self._reject_worker.start()

    def _rejects_to_file(self) -> bool:
        dlq = self.c.graph.error_handling.dead_letter_queue
        historian = self.ctx.historian
        return (
            dlq.enabled
            and historian is not None
            and dlq.storage == "reject_store"
            and not historian.is_open
            and not self.ctx.dry_run
        )

    def _reject_file(self):
        """The run's `RejectFile`, opened, when the rejects go to one: then the query sinks them
        into it itself (`reject_rows` by `sink_parquet` into a part file per validation), with no
        Python in between: on the 10 M-row benchmark chain handing them to Python through
        `sink_batches` and encoding them there cost ~0.25 s wall and ~0.37 CPU-s more. Else None:
        the table (the historian is open) and a dead-letter file take them through their writer."""
        if not self._rejects_to_file():
            return None
        if self._reject_worker is None:
            self._open_reject_store()
        return self._reject_worker.sink  # type: ignore[union-attr]

    def _counting_feeder(self) -> _Feeder | None:
        """A destination written through its writer counts the kept rows as they pass."""
        return self._feeders[0] if self._feeders else None

    def _destination_query(self, nid: str, lf: pl.LazyFrame) -> pl.LazyFrame:
        """The kept rows into destination `nid`: a Polars sink into a file destination's temporary
        file (Parquet, CSV), else the destination's own `write()` per batch, on its own thread."""
        from engine.connectors.file import FileSink

        sink = self._make_sink(nid)
        worker = _SinkWorker(sink, self.stats[nid])
        self._sinks[nid] = worker
        fmt = sink.config.resolved_format if isinstance(sink, FileSink) else None
        native = (
            type(sink) is FileSink
            and fmt in ("parquet", "csv")
            and sink.config.mode == "overwrite"
            and (fmt == "parquet" or _utf8(sink))
        )
        if not native:
            worker.start()
            feeder = _Feeder(worker, lf.collect_schema(), self.ctx.cancel)
            self._feeders.append(feeder)
            return lf.sink_batches(feeder, lazy=True)
        sink.target.parent.mkdir(parents=True, exist_ok=True)
        sink.temp = sink._hidden("tmp")
        sink._forget_temp = self.ctx.track("file", str(sink.temp))
        options = sink.config.options
        if fmt == "parquet":
            self._parquet_sinks.append(sink)
            return lf.sink_parquet(sink.temp, compression=options.compression or "snappy", lazy=True)
        values = sink.config._option_values()
        self._csv_sinks.append(sink)
        lf = lf.with_columns(_text_columns(lf))
        return lf.sink_csv(
            sink.temp, include_header=values["header"], separator=values["delimiter"], lazy=True
        )

    def _on_rejects(self, nid: str, rows: dict[str, int]):
        def take(frame: pl.DataFrame) -> None:
            if self.ctx.cancel.is_set():  # stops the query (a run without rejects stops at its end)
                raise RunCancelled("run cancelled")
            if frame.height == 0:
                return
            with self._reject_lock:
                rows[nid] += frame.height
                self._store_rejects(nid, frame)

        return take

    # ---- after the query ---------------------------------------------------------------------
    def _count(
        self,
        source_rows: int,
        counts: dict[str, int],
        kept: int | None,
        reject_rows: dict[str, int],
        elapsed: float,
    ) -> None:
        """Every node's counts, as the push executor would have counted them batch by batch: forward
        from the source's rows (a validation passes on its input less its rejects, a filter what
        was counted after it), then back from the kept rows for what follows the last filter."""
        source, steps = self.chain.source, self.chain.steps
        for worker in self._sinks.values():
            if not worker.thread.started:  # a Polars sink wrote the temporary file: complete it
                _complete(worker.sink)
        after: list[int | None] = []
        rows: int | None = source_rows
        for nid in steps:
            if self.c.transforms[nid].type == "record_filter":
                rows = counts.get(nid)
            elif rows is not None:
                rows -= reject_rows.get(nid, 0)
            after.append(rows)
        if None in after and kept is None:  # the last filter's: known from the kept rows only
            kept = self._kept_in_file()
        rows = kept
        for i in range(len(steps) - 1, -1, -1):
            if after[i] is None:
                after[i] = rows
            rows = after[i]
            if self.c.transforms[steps[i]].type == "record_filter":
                break
            rows = rows + reject_rows.get(steps[i], 0)  # type: ignore[operator]

        stats = self.stats[source]
        stats.rows_out, stats.status, stats.duration_s = source_rows, "success", elapsed
        self._port_rows[(source, OUT)] = source_rows
        self._progress(source)
        rows = source_rows
        for nid, out in zip(steps, after, strict=True):
            stats = self.stats[nid]
            stats.rows_in, stats.rows_out = rows, int(out)  # type: ignore[arg-type]
            stats.rows_rejected = reject_rows.get(nid, 0)
            stats.status = "success"
            self._port_rows[(nid, OUT)] = stats.rows_out
            if nid in reject_rows:
                self._port_rows[(nid, REJECTED)] = reject_rows[nid]
            self._progress(nid)
            rows = stats.rows_out
        for nid in self.chain.destinations:
            self.stats[nid].rows_in = rows

    def _kept_in_file(self) -> int:
        """The kept rows, from the footer of the Parquet file a Polars sink wrote, else from the
        CSV file one wrote (read again, from the page cache: ~10 ms for 1 M rows). Counting them
        inside the query instead split its plan in two: Polars shares one subplan between outputs,
        and the count took it, so a validation's rejects read and transformed the source again."""
        if self._parquet_sinks:
            temp = self._parquet_sinks[0].temp
            return int(pl.scan_parquet(temp, glob=False).select(pl.len()).collect().item())
        sink = self._csv_sinks[0]
        if sink.temp.stat().st_size == 0:
            return 0
        values = sink.config._option_values()
        csv = pl.scan_csv(
            sink.temp, has_header=values["header"], separator=values["delimiter"], infer_schema=False
        )
        return int(csv.select(pl.len()).collect().item())


def _utf8(sink) -> bool:
    from engine.connectors.formats.common import is_utf8

    return is_utf8(sink.config._option_values()["encoding"])


def _text_columns(lf: pl.LazyFrame) -> list[pl.Expr]:
    """The columns a CSV file writes as text (engine/connectors/formats/common.py
    `to_text_frame`, which the CSV writer applies to every batch), as expressions."""
    from engine.connectors.formats.common import _needs_text, _text_expr

    return [
        _text_expr(pl.col(name), dtype, True, False).alias(name)
        for name, dtype in lf.collect_schema().items()
        if _needs_text(dtype, False) or dtype.is_nested()
    ]


def _reads_once(queries: list[pl.LazyFrame]) -> bool:
    """Whether the plan Polars will run for these outputs scans the source once (every output's
    subplan shared, as `_run_query` builds it). Read off `explain_all` (~1 ms): the guard that
    keeps `_Looker`'s count right should a plan shape, or a Polars release, not share it."""
    try:
        return pl.explain_all(queries).count("SCAN [") == 1
    except Exception:
        return False


class _Looker:
    """Looks at every batch of the source as it enters the query: a cancelled run stops there
    (every output may be a native sink, with no Python callback of ours to raise from), and a CSV
    source's rows are counted (a count of its own read the whole file once more, through a memory
    map: ~0.25 CPU-s and 200 MB more peak RSS on the 10 M-row benchmark file). ~400 calls on that
    file, no measurable cost. Polars may push projections and slices through it into the scan, and
    predicates too when it does not count (a Parquet source, whose row groups are then skipped by
    their statistics); a counting one must see every row the file holds, so filters stay above it
    (a CSV file is parsed whole either way)."""

    def __init__(self, cancel: threading.Event):
        self.cancel, self.rows = cancel, 0
        self._lock = threading.Lock()  # Polars may call it from several threads

    def on(self, scan: pl.LazyFrame, *, count: bool) -> pl.LazyFrame:
        return scan.map_batches(
            self._counting if count else self._looking,
            predicate_pushdown=not count,
            projection_pushdown=True,
            slice_pushdown=True,
            streamable=True,
        )

    def _looking(self, frame: pl.DataFrame) -> pl.DataFrame:
        if self.cancel.is_set():
            raise RunCancelled("run cancelled")
        return frame

    def _counting(self, frame: pl.DataFrame) -> pl.DataFrame:
        with self._lock:
            self.rows += frame.height
        return self._looking(frame)


class _Feeder:
    """Hands the query's batches to a destination's writer thread; a destination that got none
    gets one empty batch with the columns, as the push executor gives it (a table is created)."""

    def __init__(self, worker: _SinkWorker, schema: pl.Schema, cancel: threading.Event):
        self.worker, self.schema, self.cancel, self.fed = worker, schema, cancel, False
        self.rows = 0

    def __call__(self, frame: pl.DataFrame) -> None:
        if self.cancel.is_set():
            raise RunCancelled("run cancelled")
        if frame.height:
            self.fed = True
            self.rows += frame.height
            self.worker.put(frame)

    def finish(self) -> None:
        if not self.fed:
            self.worker.put(pl.DataFrame(schema=self.schema))


def _complete(sink) -> None:
    """What `FileSink.flush` does for a file its writer wrote: synced, checked, old mode kept."""
    import shutil

    from engine.errors import ConnectorError

    try:
        with open(sink.temp, "rb+") as fh:
            os.fsync(fh.fileno())
        if sink.target.is_dir():
            raise ConnectorError(f"{sink.target}: is a folder, not a file")
        if sink.target.exists():
            shutil.copymode(sink.target, sink.temp)
    except Exception as exc:
        raise sink._failed(exc) from None


def executor_for(plan: Plan, ctx, **kwargs: Any) -> Executor:
    """The executor for a batch run: the one-query chain where the plan is one, else the push
    executor."""
    chain = chain_of(plan)
    if chain is None:
        return Executor(plan, ctx, **kwargs)
    return LazyChainExecutor(plan, ctx, chain, **kwargs)
