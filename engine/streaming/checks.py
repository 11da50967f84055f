"""What a real-time pipeline may hold, checked before it starts (issues carry their JSON path).

Polled sources (files, tables) are refused rather than re-read on an interval: re-reading a file
or a table would deliver its rows again on every pass, and a watermark to avoid that is not part
of the connector contract. Run such pipelines on an `interval` or `cron` schedule instead.
"""

from __future__ import annotations

from engine.connectors import registry as connectors
from engine.connectors.base import StreamingSource
from engine.context import RunContext
from engine.errors import SpecIssue
from engine.spec.validate import Compiled
from engine.streaming.sinks import APPENDABLE_FORMATS


def check_streaming(compiled: Compiled, ctx: RunContext | None = None) -> list[SpecIssue]:
    ctx = ctx or RunContext()
    issues: list[SpecIssue] = []
    for node in compiled.graph.nodes:
        base = compiled.paths.get(node.id, node.id)
        config = compiled.configs.get(node.id)
        cls = connectors.get(node.connector_type or "")
        if cls is None or config is None:
            continue
        if node.kind == "source":
            try:
                source = cls.make_source(config, ctx, node.id)
            except Exception:  # cannot tell here; the run reports it when it starts the source
                continue
            if not isinstance(source, StreamingSource):
                issues.append(
                    SpecIssue(
                        f"{base}.connector_type",
                        f"'{node.connector_type}' is a polled source; a real_time pipeline reads streaming"
                        " sources only (field protocols, MQTT): re-reading it would repeat its rows."
                        " Use an interval or cron schedule for it",
                    )
                )
        elif node.kind == "destination":
            fmt = getattr(config, "resolved_format", None)
            if node.connector_type == "file" and fmt not in APPENDABLE_FORMATS:
                issues.append(
                    SpecIssue(
                        f"{base}.config.format",
                        f"a real_time pipeline appends each micro-batch; {fmt} files cannot be appended to",
                        ", ".join(APPENDABLE_FORMATS),
                    )
                )
            if getattr(config, "mode", None) == "replace":
                issues.append(
                    SpecIssue(
                        f"{base}.config.mode",
                        "'replace' would replace the table at every micro-batch in a real_time pipeline",
                        "append, upsert",
                    )
                )
    return issues
