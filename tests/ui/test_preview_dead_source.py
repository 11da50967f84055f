"""The editor's live preview of a protocol source that cannot be reached says why ("no data:
modbus://127.0.0.1:<port>: connection refused"), not "0 rows · live sample"."""

from __future__ import annotations

from tests.engine.test_preview_protocols import modbus_doc
from tests.net import closed_port


def test_the_live_preview_of_an_unreachable_device_shows_the_reason(qtbot, panel, tmp_path, artifacts):
    port = closed_port()
    with qtbot.waitSignal(panel.finished, timeout=30_000) as done:
        panel.show_node(modbus_doc(port), "meters", base_dir=tmp_path)
    result = done.args[0]
    assert result.live_sampled == ["meters"]
    title = panel.title.text()
    assert f"no data: modbus://127.0.0.1:{port}: connection refused" in title, title
    assert "live sample" not in title
    rows = panel.rows_table.frame()  # the device's tags as bad records with their reason
    assert rows.height >= 1 and set(rows["reason"]) == {"comm_lost"}
    panel.grab().save(str(artifacts / "preview_dead_source.png"))
