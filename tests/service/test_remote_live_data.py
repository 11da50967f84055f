"""`engine.live` and `engine.data` of a `RemoteEngine` against the service's `/live/*` and `/data/*`
routes: a real LocalEngine behind a real uvicorn server (tests/service/http_server.py), frames over
the wire as Arrow IPC, and the same answers the engine gives in process."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import polars as pl
import pytest

from tests.service.test_http_api import assert_one_line_error

ARROW = "application/vnd.apache.arrow.stream"
MINUTES = [datetime(2026, 1, 1, 0, m // 2, 30 * (m % 2), tzinfo=UTC) for m in range(4)]


@pytest.fixture
def remote(api):
    from engine.api.remote import RemoteEngine

    engine = RemoteEngine(api.url, api.token)
    yield engine
    engine.close()


def store_tags(api, tmp_path) -> None:
    """Two tags into the service's historian, through a pipeline the service runs."""
    readings = tmp_path / "readings.parquet"
    pl.DataFrame(
        {
            "tag": ["t1"] * 4 + ["t2"] * 4,
            "timestamp": MINUTES * 2,
            "value": [1.0, 3.0, 10.0, 20.0, 5.0, 6.0, 7.0, 8.0],
        }
    ).write_parquet(readings)
    doc = {
        "name": "tags in",
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": str(readings)}},
            {"id": "hist", "kind": "destination", "inputs": ["src"], "connector_type": "historian"},
        ],
    }
    created = api.client.post("/pipelines", json=doc)
    assert created.status_code == 201, created.text
    run_id = api.client.post(f"/pipelines/{created.json()['id']}/execute").json()["run_id"]
    record = api.wait_for(
        lambda: (r := api.client.get(f"/runs/{run_id}").json()).get("status") not in ("running", None) and r,
        what="the run to end",
    )
    assert record["status"] == "success", record["record"].get("error")


def test_history_last_values_and_tags_come_as_the_engine_gives_them(api, remote, tmp_path):
    store_tags(api, tmp_path)
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    here = api.engine.live.history(["t1", "t2"], start, end, "1m", ("avg", "count"))
    there = remote.live.history(["t1", "t2"], start, end, "1m", ("avg", "count"))
    assert there.equals(here) and there.height == 4  # types too: the bucket stays a UTC datetime
    assert there.filter(pl.col("tag") == "t1")["avg"].to_list() == [2.0, 15.0]
    assert remote.live.last_values(["t1", "t2"]).equals(api.engine.live.last_values(["t1", "t2"]))
    tags = {t["tag"]: t for t in remote.live.tags()}
    assert tags["t1"]["value"] == 20.0 and tags["t2"]["value"] == 8.0

    # Arrow on the wire, and one-line 4xx errors for bad input
    raw = api.client.get(
        "/live/history", params={"tags": "t1", "bucket": "1m", "start": "2026-01-01T00:00:00Z"}
    )
    assert raw.headers["content-type"] == ARROW
    assert pl.read_ipc_stream(io.BytesIO(raw.content))["avg"].to_list() == [2.0, 15.0]
    assert_one_line_error(
        api.client.get("/live/history", params={"tags": "t1", "bucket": "1y"}), 422, "query.bucket"
    )
    assert_one_line_error(api.client.get("/live/windows"), 422, "query.tags")
    assert_one_line_error(
        api.client.get("/live/chart-series", params={"tags": "t1", "seconds": -1}), 422, "query.seconds"
    )


def test_windows_and_chart_series_carry_the_ring_buffers_points(api, remote):
    import numpy as np

    buffer = api.engine.live.buffer()
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    stamps = [now_us - 3_000_000 + i * 1_000_000 for i in range(3)]

    def append(tag: str, ts: list[int], values: list[float | None], quality: str) -> None:
        at = [datetime.fromtimestamp(t / 1e6, UTC) for t in ts]
        buffer.append(
            pl.DataFrame(
                {"tag": [tag] * len(ts), "timestamp": at, "value": values, "quality": [quality] * len(ts)}
            )
        )

    append("ring.a", stamps, [0.0, 1.0, 2.0], "good")
    append("ring.b", stamps[-1:], [None], "bad")

    got = remote.live.fetch_windows(["ring.a", "ring.b", "ring.none"], stamps[1])
    assert got["ring.a"][0].tolist() == stamps[1:] and got["ring.a"][1].tolist() == [1.0, 2.0]
    assert np.isnan(got["ring.b"][1][0]) and got["ring.b"][2].tolist() == [2]
    assert len(got["ring.none"][0]) == 0  # a tag the service does not have: empty, not missing
    series = remote.live.chart_series(["ring.a"], 10.0, now_us=now_us)
    assert series["ring.a"][0][-3:].tolist() == stamps

    # `windows` is what the Live page calls on its own thread: memory only, brought up to date behind
    first = remote.live.windows(["ring.a"], stamps[0])
    assert set(first) == {"ring.a"}

    def caught_up():
        return remote.live.windows(["ring.a"], stamps[0])["ring.a"][0].tolist() == stamps

    api.wait_for(caught_up, timeout=10, what="the local copy of the window")
    append("ring.a", [stamps[-1] + 1_000_000], [3.0], "uncertain")  # only the new point crosses the wire
    api.wait_for(
        lambda: remote.live.windows(["ring.a"], stamps[0])["ring.a"][2].tolist() == [0, 0, 0, 1],
        timeout=10,
        what="the new point",
    )


def test_tables_pages_sql_and_export_through_the_service(api, remote, tmp_path):
    store_tags(api, tmp_path)
    names = {o["name"]: o for o in remote.data.objects()}
    assert names.keys() == {o["name"] for o in api.engine.data.objects()} and "tags" in names
    page = remote.data.preview_object("tags", offset=2, limit=3)
    local = api.engine.data.preview_object("tags", offset=2, limit=3)
    assert page["total"] == local["total"] == 8 and page["offset"] == 2
    assert page["frame"].equals(local["frame"])

    result = remote.data.sql("SELECT tag, sum(value) AS total FROM tags GROUP BY tag ORDER BY tag", limit=1)
    assert result["rows"] == 1 and result["truncated"] is True
    assert result["frame"].to_dicts() == [{"tag": "t1", "total": 34.0}]
    with pytest.raises(Exception, match=r"SQL console: .*read-only") as refused:
        remote.data.sql("DROP TABLE tags")
    assert "\n" not in str(refused.value)
    assert "tags" in {o["name"] for o in remote.data.objects()}  # nothing changed

    target = tmp_path / "out" / "tags.csv"
    assert remote.data.export_object("tags", target).result(30) == target
    assert pl.read_csv(target).height == 8
    parquet = remote.data.export_object("tags", tmp_path / "out" / "tags.parquet").result(30)
    assert pl.read_parquet(parquet)["value"].sum() == 60.0
    with pytest.raises(Exception, match="no table or view 'nowhere'"):
        remote.data.export_object("nowhere", tmp_path / "out" / "x.csv").result(30)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "tags.csv",
        "tags.parquet",
    ]  # no leftovers
    frame_file = remote.data.export_frame(result["frame"], tmp_path / "out" / "q.parquet").result(30)
    assert pl.read_parquet(frame_file).to_dicts() == [{"tag": "t1", "total": 34.0}]


def test_the_dashboard_counts_today_in_the_clients_time_zone(api, remote, tmp_path):
    from datetime import timedelta, timezone

    store_tags(api, tmp_path)
    (run,) = api.engine.runs.list()
    started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    of_day = started - started.replace(hour=0, minute=0, second=0, microsecond=0)
    seconds = int(of_day.total_seconds()) // 60 * 60
    # A client for whom the run began at 00:05 (its today), and one for whom it began at 23:55 the
    # day before: the same moments, told in two offsets.
    after_midnight = timezone(timedelta(seconds=300 - seconds))
    before_midnight = timezone(timedelta(seconds=86100 - seconds))
    cards = ("pipelines", "runs_today", "rows_today", "failures_today", "active_streams")
    now = started + timedelta(minutes=1)
    there = remote.health.summary(now.astimezone(after_midnight))
    here = api.engine.health.summary(now.astimezone(after_midnight))
    assert {c: there[c] for c in cards} == {c: here[c] for c in cards}
    assert there["runs_today"] == 1 and there["rows_today"] == 8
    assert (
        remote.health.summary((started + timedelta(minutes=10)).astimezone(before_midnight))["runs_today"]
        == 0
    )
    recent = remote.health.summary(recent=5)["recent_runs"]
    assert [r["run_id"] for r in recent] == [run["run_id"]]
