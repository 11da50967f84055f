"""`EngineAPI`: the one facade the desktop app uses (architecture: process model).

`InProcessEngine(data_dir)` runs the engine in this process: the calls of each area live in their
own module (pipelines, runs, connectors, live, data, dashboard) on the shared `EngineCore`.
"""

from __future__ import annotations

from engine.api.connectors import ConnectorsAPI
from engine.api.core import EngineCore, Event, Job
from engine.api.dashboard import DashboardAPI
from engine.api.data import DataAPI
from engine.api.live import LiveAPI
from engine.api.pipelines import PipelinesAPI
from engine.api.runs import RunsAPI


class InProcessEngine(PipelinesAPI, RunsAPI, ConnectorsAPI, LiveAPI, DataAPI, DashboardAPI, EngineCore):
    """The engine in this process, behind the EngineAPI calls."""


__all__ = ["EngineCore", "Event", "InProcessEngine", "Job"]
