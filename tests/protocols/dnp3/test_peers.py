"""opendnp3 as a third-party peer, both ways: our master against a bare opendnp3 outstation built
here (not our simulator), and a bare opendnp3 master built here against our simulator."""

from __future__ import annotations

import threading
import time

import opendnp3 as o
import polars as pl
import pytest

from protocols.dnp3.simulator import Dnp3Simulator
from tests.net import free_port

from .conftest import T0, wait_for


class _Quiet(o.IChannelListener):
    def __init__(self) -> None:
        super().__init__()

    def OnStateChange(self, state) -> None:
        pass


class _Commands(o.ICommandHandler):
    def __init__(self) -> None:
        super().__init__()
        self.operated: list[tuple[str, int, str]] = []

    def Begin(self) -> None:
        pass

    def End(self) -> None:
        pass

    def Select(self, command, index):
        return o.CommandStatus.SUCCESS

    def Operate(self, command, index, handler, op_type):
        self.operated.append((type(command).__name__, index, op_type.name))
        return o.CommandStatus.SUCCESS


class _Outstation(o.IOutstationApplication):
    def __init__(self) -> None:
        super().__init__()


@pytest.fixture
def bare_outstation():
    """A plain opendnp3 outstation: 3 points of each type, a few values written by hand."""
    manager = o.DNP3Manager(1)
    port = free_port()
    channel = manager.AddTCPServer(
        "peer", o.levels.NOTHING, o.ServerAcceptMode.CloseExisting, o.IPEndpoint("127.0.0.1", port), _Quiet()
    )
    config = o.OutstationStackConfig(o.DatabaseConfig(3))
    config.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(50)
    config.outstation.params.allowUnsolicited = True
    config.link.LocalAddr, config.link.RemoteAddr = 1024, 3
    commands, app = _Commands(), _Outstation()
    outstation = channel.AddOutstation("peer-outstation", commands, app, config)
    outstation.Enable()
    updates = o.UpdateBuilder()
    updates.Update(o.Binary(True, o.Flags(0x01)), 0)
    double = o.DoubleBitBinary(o.DoubleBit.DETERMINED_OFF)
    double.flags = o.Flags(0x01 | (1 << 6))
    updates.Update(double, 2)
    updates.Update(o.Analog(-42.0, o.Flags(0x21)), 1)  # ONLINE | OVER_RANGE
    updates.Update(o.Counter(1234, o.Flags(0x01)), 0)
    updates.FreezeCounter(0, False)
    outstation.Apply(updates.Build())
    yield port, outstation, commands
    manager.Shutdown()


def test_our_master_reads_a_bare_opendnp3_outstation(bare_outstation, run_source):
    port, outstation, commands = bare_outstation
    config = {"port": port, "master_address": 3, "outstation_address": 1024, "timeout_ms": 2000}
    source, batches = run_source(
        **config, integrity_poll_interval_s=60, event_poll_interval_s=0.2, allow_controls=True
    )
    static = batches.wait(lambda f: f.filter(pl.col("timestamp").is_not_null()).height >= 21)
    values = {
        row["tag"]: row for row in static.filter(pl.col("timestamp").is_not_null()).iter_rows(named=True)
    }
    assert values["BI.0"]["value"] == 1.0 and values["BI.0"]["quality"] == "good"
    assert values["DBI.2"]["value"] == 1.0  # determined off
    assert (values["AI.1"]["value"], values["AI.1"]["quality"], values["AI.1"]["reason"]) == (
        -42.0,
        "uncertain",
        "over_range",
    )
    assert values["CTR.0"]["value"] == 1234.0 and values["FCTR.0"]["value"] == 1234.0
    assert values["BI.1"]["reason"] == "restart"  # never written: opendnp3's initial RESTART flag

    first = len(batches.frames)
    updates = o.UpdateBuilder()
    updates.Update(o.Analog(17.0, o.Flags(0x01)), 2)
    outstation.Apply(updates.Build())
    rows = batches.wait_rows(pl.col("tag") == "AI.2", after=first)
    assert rows["value"].to_list()[-1] == 17.0

    result = source.operate_binary(1, "pulse_on", who="peer test", mode="direct_operate")
    assert result.ok
    assert commands.operated[-1] == ("ControlRelayOutputBlock", 1, "DirectOperate")
    result = source.operate_analog(0, 12.5, who="peer test")
    assert result.ok and commands.operated[-1] == ("AnalogOutputFloat32", 0, "SelectBeforeOperate")


class _Collect(o.ISOEHandler):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, int], float] = {}
        self.lock = threading.Lock()

    def BeginFragment(self, info) -> None:
        pass

    def EndFragment(self, info) -> None:
        pass

    def Process(self, info, values) -> None:
        with self.lock:
            for item in values:
                value = getattr(item.value, "value", None)
                if value is not None:
                    self.values[type(item.value).__name__, item.index] = value


class _Master(o.IMasterApplication):
    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[str] = []
        self.overflow: list[bool] = []

    def OnReceiveIIN(self, iin) -> None:
        self.overflow.append(iin.IsSet(o.IINBit.EVENT_BUFFER_OVERFLOW))

    def OnTaskStart(self, type, id) -> None:
        self.tasks.append(type.name)

    def OnTaskComplete(self, info) -> None:
        pass

    def Now(self):
        return o.UTCTimestamp(time.time_ns() // 1_000_000)


def test_a_bare_opendnp3_master_reads_our_outstation_and_its_overflow_clears():
    with Dnp3Simulator(port=0, feeders=4, update_interval_s=None, start_t=T0, event_buffer=3) as rtu:
        manager = o.DNP3Manager(1)
        try:
            channel = manager.AddTCPClient(
                "peer-master",
                o.levels.NOTHING,
                o.ChannelRetry.Default(),
                [o.IPEndpoint("127.0.0.1", rtu.port)],
                "0.0.0.0",
                _Quiet(),
            )
            config = o.MasterStackConfig()
            config.link.LocalAddr, config.link.RemoteAddr = rtu.master_address, rtu.address
            soe, app = _Collect(), _Master()
            master = channel.AddMaster("peer-master.master", soe, app, config)
            master.Enable()
            wait_for(lambda: ("Analog", 0) in soe.values, what="the startup integrity poll")
            raw = rtu.snapshot()
            assert soe.values["Analog", 0] == raw["analog_input", 0][0]
            assert soe.values["Counter", 1] == raw["counter", 1][0]
            wait_for(lambda: "ENABLE_UNSOLICITED" in app.tasks, what="start-up done")

            # 8 analog events at once, where the outstation keeps 3
            rtu.set_values({("analog_input", i): 30000 + i for i in range(rtu.per_type)})
            wait_for(lambda: any(app.overflow), what="EVENT_BUFFER_OVERFLOW")
            wait_for(lambda: soe.values.get(("Analog", 0)) == 30000, what="the values (by an integrity poll)")
            wait_for(lambda: app.overflow and not app.overflow[-1], what="the overflow IIN to clear")
            integrity_polls = app.tasks.count("STARTUP_INTEGRITY_POLL")
            assert integrity_polls <= 3  # the start-up one and the overflow's, not a loop
            rtu.set_value("analog_input", 0, 31000)  # the link keeps working: a fresh event arrives
            wait_for(lambda: soe.values.get(("Analog", 0)) == 31000, what="a later event")
            assert app.tasks.count("STARTUP_INTEGRITY_POLL") == integrity_polls
            assert not app.overflow[-1]
        finally:
            manager.Shutdown()
