"""Streaming execution of `real_time` pipelines (see docs/architecture.md, "Streaming execution")."""

from engine.streaming.checks import check_streaming
from engine.streaming.run import run_streaming
from engine.streaming.runner import StreamRunner
from engine.streaming.settings import StreamSettings

__all__ = ["StreamRunner", "StreamSettings", "check_streaming", "run_streaming"]
