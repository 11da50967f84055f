"""Browsing and chunked reads against the asyncua wind-farm simulator."""

from __future__ import annotations

import pytest

from engine.errors import ConnectorError
from engine.tags import TAG_SCHEMA
from protocols.opcua.client import browse
from protocols.opcua.connector import OpcUaSource, read_once


def test_browse_objects_then_a_turbine(farm):
    top = {row["browse_name"]: row for row in browse(farm.endpoint)}
    assert top["2:WindFarm"]["node_class"] == "Object" and top["2:WindFarm"]["has_children"]
    turbines = browse(farm.endpoint, top["2:WindFarm"]["node_id"])
    assert [t["display_name"] for t in turbines] == ["Turbine01", "Turbine02", "Turbine03"]
    tags = browse(farm.endpoint, "ns=2;s=Turbine02")
    assert [t["node_id"] for t in tags] == [
        "ns=2;s=Turbine02.WindSpeed",
        "ns=2;s=Turbine02.Power",
        "ns=2;s=Turbine02.RotorRpm",
        "ns=2;s=Turbine02.GearboxTemp",
    ]
    assert {(t["node_class"], t["data_type"], t["access_level"]) for t in tags} == {
        ("Variable", "Double", "read,write")
    }


def test_browse_unknown_node_is_one_clear_line(farm):
    with pytest.raises(ConnectorError, match=r"cannot browse ns=2;s=NoSuchNode") as err:
        browse(farm.endpoint, "ns=2;s=NoSuchNode")
    assert "\n" not in str(err.value) and farm.endpoint in str(err.value)


def test_read_once_resolves_node_ids_and_browse_paths(farm):
    frame = read_once(
        {"endpoint": farm.endpoint, "nodes": ["ns=2;s=Turbine01.Power", "WindFarm/Turbine03/2:GearboxTemp"]}
    )
    assert frame.schema == TAG_SCHEMA
    assert frame["tag"].to_list() == ["Turbine01.Power", "Turbine03.GearboxTemp"]
    assert frame["quality"].to_list() == ["good", "good"]
    assert frame["server_timestamp"].null_count() == 0 and frame["value"].null_count() == 0


def test_tag_names_can_be_node_ids(farm):
    frame = read_once({"endpoint": farm.endpoint, "browse_root": "WindFarm/Turbine01", "tag_name": "node_id"})
    assert frame["tag"].to_list()[0] == "ns=2;s=Turbine01.WindSpeed" and frame.height == 4


def test_unknown_browse_path_is_a_bad_record_naming_the_missing_part(farm):
    frame = read_once(
        {"endpoint": farm.endpoint, "nodes": ["WindFarm/Turbine09/Power", "WindFarm/Turbine01/Power"]}
    )
    rows = {row["tag"]: row for row in frame.iter_rows(named=True)}
    assert rows["WindFarm/Turbine09/Power"]["quality"] == "bad"
    assert rows["WindFarm/Turbine09/Power"]["reason"] == (
        "BadNoMatch: browse path 'WindFarm/Turbine09/Power': no 'Turbine09' found"
    )
    assert rows["Turbine01.Power"]["quality"] == "good" and rows["Turbine01.Power"]["value"] is not None


@pytest.fixture
def read_limit(farm):
    farm.set_max_nodes_per_read(5)
    yield farm
    farm.set_max_nodes_per_read(0)


def test_reads_are_chunked_to_the_servers_max_nodes_per_read(read_limit):
    sim = read_limit
    source = OpcUaSource({"endpoint": sim.endpoint, "browse_root": "WindFarm"}, _ctx())
    before = sim.read_requests
    frame = source.read_once()
    assert frame.height == 12 and frame["quality"].unique().to_list() == ["good"]
    # 12 values in requests of at most 5: three reads (the simulator refuses larger ones).
    assert source.counters["reads"] == 3
    assert sim.read_requests - before >= 3
    # A configured limit wins over the server's.
    small = OpcUaSource(
        {"endpoint": sim.endpoint, "browse_root": "WindFarm", "max_nodes_per_read": 2}, _ctx()
    )
    assert small.read_once().height == 12 and small.counters["reads"] == 6


def test_a_read_over_the_limit_is_refused_by_the_simulator(read_limit):
    """The limit is real: ignoring it gets BadTooManyOperations (so the chunking test means something)."""
    config = {"endpoint": read_limit.endpoint, "browse_root": "WindFarm", "max_nodes_per_read": 8}
    with pytest.raises(Exception, match="BadTooManyOperations"):
        OpcUaSource(config, _ctx()).read_once()


def test_poll_mode_reads_every_interval(farm, recorder):
    config = {
        "endpoint": farm.endpoint,
        "browse_root": "WindFarm",
        "mode": "poll",
        "publishing_interval_ms": 100,
    }
    with recorder(config) as rec:
        rec.wait_for(lambda: sum(b.height for b in rec.batches) >= 36)
    frame = rec.frame()
    assert frame.group_by("tag").len()["len"].min() >= 2
    assert "subscribed" not in rec.state_names() and rec.source.counters["reads"] >= 3


def test_check_on_a_closed_port_is_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = OpcUaSource(
        {"endpoint": f"opc.tcp://127.0.0.1:{port}", "nodes": ["ns=2;i=1"], "timeout_s": 1}, _ctx()
    )
    with pytest.raises(ConnectorError) as err:
        source.check()
    assert str(err.value).startswith(f"OPC UA opc.tcp://127.0.0.1:{port}: ")
    assert "\n" not in str(err.value)


def test_check_passes_on_a_running_server(farm):
    OpcUaSource({"endpoint": farm.endpoint, "nodes": ["ns=2;s=Turbine01.Power"]}, _ctx()).check()


def _ctx():
    from engine.context import RunContext

    return RunContext()
