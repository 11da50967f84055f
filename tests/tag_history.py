"""A historian holding two tags over three minutes, for the `aggregator query` tests (in process and
next to a service): t1.power and t2.power every 10 s from T0, and one bad t2.power value at 175 s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def seed_two_tags(data_dir: Path, source: str = "seed") -> Path:
    """`data_dir` (made if missing) with its historian.duckdb holding the two tags."""
    from engine.store.historian import Historian
    from engine.store.tag_historian import TagHistorian
    from engine.tags import TagBatchBuilder

    data_dir.mkdir(parents=True, exist_ok=True)
    historian = Historian(data_dir / "historian.duckdb")
    builder = TagBatchBuilder(source)
    for second in range(0, 180, 10):
        builder.add("t1.power", float(second), timestamp=T0 + timedelta(seconds=second))
        builder.add("t2.power", 2.0 * second, timestamp=T0 + timedelta(seconds=second))
    builder.add("t2.power", None, timestamp=T0 + timedelta(seconds=175), quality="bad", reason="comm_lost")
    TagHistorian(historian).append(builder.take())
    historian.close()
    return data_dir


def python_child(script: str):
    """`script` (dedented) run by this interpreter as a process of its own, from the repository root,
    stdin, stdout and stderr piped as text: a historian writer that a test reads, then kills."""
    import subprocess
    import sys
    import textwrap

    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
