"""Alerts on a real stream: an OPC UA simulator (protocols/opcua/simulator.py) into the tag
historian, run by a LocalEngine. The rules load when the run starts; the ticker evaluates the tag
thresholds on the values the historian keeps live; stopping the simulator loses the source and
raises `source lost`; the run's end clears it."""

from __future__ import annotations

import pytest

from tests.pipelines import opcua_stream
from tests.ui.conftest import opcua_simulator
from tests.waiting import wait_for

pytestmark = pytest.mark.slow  # a real OPC UA server and a stream of a few seconds


@pytest.fixture(autouse=True)
def _protocols():
    import protocols

    protocols.register_all()


def test_tag_threshold_and_source_lost_on_a_real_stream(tmp_path):
    from engine.api import LocalEngine

    engine = LocalEngine(tmp_path / "data")
    try:
        with opcua_simulator(1, 2) as sim:
            doc = opcua_stream(sim, name="wind", source_id="plc")
            doc["error_handling"] = {
                "alerts": [
                    {"condition": "tag * > -1e12", "severity": "info"},  # every value: each tag raises
                    {"condition": "source lost > 0.5s", "severity": "critical"},
                ]
            }
            job = engine.runs.start(doc)

            def tag_alerts():
                return [a for a in engine.alerts.list() if a["kind"] == "tag"]

            raised = wait_for(
                lambda: len(tag_alerts()) >= 2 and tag_alerts(), 60, what="tag alerts from the stream"
            )
            assert {a["severity"] for a in raised} == {"info"} and all(a["value"] is not None for a in raised)
            sim.stop()
            lost = wait_for(
                lambda: [a for a in engine.alerts.list() if a["kind"] == "source_lost"],
                60,
                what="source lost",
            )
            assert (lost[0]["subject"], lost[0]["severity"]) == ("plc", "critical")
            engine.runs.stop(job.id)
            job.result(60)
        wait_for(
            lambda: not [a for a in engine.alerts.list() if a["kind"] == "source_lost"],
            20,
            what="lost to clear",
        )
    finally:
        engine.close()
