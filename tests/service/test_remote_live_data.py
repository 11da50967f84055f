"""`engine.live` and `engine.data` of a `RemoteEngine` against the `/live/*` and `/data/*` routes of a
real `aggregator serve` process (tests/service/http_server.py, one for the module): frames over the
wire as Arrow IPC, and the answers the engine gives for what the test stored. Everything is seeded
through the service: pipelines it stores and runs into its historian (whose `historian` destination
feeds the live ring buffers too)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from tests.service.http_server import ApiServer, served_api
from tests.service.test_http_api import assert_one_line_error

ARROW = "application/vnd.apache.arrow.stream"
MINUTES = [datetime(2026, 1, 1, 0, m // 2, 30 * (m % 2), tzinfo=UTC) for m in range(4)]


@pytest.fixture
def remote(api):
    from engine.api.remote import RemoteEngine

    engine = RemoteEngine(api.url, api.token)
    yield engine
    engine.close()


def into_historian(api: ApiServer, pid: str, frame: pl.DataFrame, folder: Path) -> dict:
    """`frame` (tag, timestamp, value[, quality]) into the service's historian: a pipeline `pid`
    (stored once, its file rewritten after) that the service runs; its run record."""
    folder.mkdir(parents=True, exist_ok=True)
    readings = folder / f"{pid}.parquet"
    frame.write_parquet(readings)
    doc = {
        "name": pid,
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "file", "config": {"path": str(readings)}},
            {"id": "hist", "kind": "destination", "inputs": ["src"], "connector_type": "historian"},
        ],
    }
    if api.client.get(f"/pipelines/{pid}").status_code == 404:
        created = api.client.post("/pipelines", json=doc, params={"id": pid})
        assert created.status_code == 201, created.text
    record = api.run_to_end(pid)
    assert record["status"] == "success", record["record"].get("error")
    return record


def tag_rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "tag": ["t1"] * 4 + ["t2"] * 4,
            "timestamp": MINUTES * 2,
            "value": [1.0, 3.0, 10.0, 20.0, 5.0, 6.0, 7.0, 8.0],
        }
    )


@pytest.fixture(scope="module")
def tags_stored(api, tmp_path_factory) -> None:
    """Two tags (t1, t2; four readings each) in the module's service's historian, stored once."""
    into_historian(api, "tags-in", tag_rows(), tmp_path_factory.mktemp("tags"))


def test_history_last_values_and_tags_come_as_the_engine_gives_them(api, remote, tags_stored):
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    there = remote.live.history(["t1", "t2"], start, end, "1m", ("avg", "count"))
    assert there.height == 4 and there.schema["bucket"] == pl.Datetime("us", "UTC")  # the bucket stays UTC
    assert there.select("tag", "bucket", "avg", "count").rows() == [
        ("t1", MINUTES[0], 2.0, 2),
        ("t1", MINUTES[2], 15.0, 2),
        ("t2", MINUTES[0], 5.5, 2),
        ("t2", MINUTES[2], 7.5, 2),
    ]
    last = remote.live.last_values(["t1", "t2"])
    assert last.select("tag", "timestamp", "value").rows() == [
        ("t1", MINUTES[3], 20.0),
        ("t2", MINUTES[3], 8.0),
    ]
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


def test_windows_and_chart_series_carry_the_ring_buffers_points(api, remote, tmp_path):
    import numpy as np

    now = datetime.now(UTC).replace(microsecond=0)
    now_us = int(now.timestamp() * 1e6)
    at = [now - timedelta(seconds=3 - i) for i in range(3)]
    stamps = [int(t.timestamp() * 1e6) for t in at]

    def ring_rows(tags: list[str], times: list[datetime], values: list, quality: list[str]) -> pl.DataFrame:
        return pl.DataFrame(
            {"tag": tags, "timestamp": times, "value": values, "quality": quality},
            schema={"tag": pl.String, "timestamp": pl.Datetime("us", "UTC"), "value": pl.Float64,
                    "quality": pl.String},
        )  # fmt: skip

    seed = ring_rows(
        ["ring.a"] * 3 + ["ring.b"], [*at, at[-1]], [0.0, 1.0, 2.0, None], ["good"] * 3 + ["bad"]
    )
    into_historian(api, "ring-in", seed, tmp_path)

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
    one_more = ring_rows(["ring.a"], [at[-1] + timedelta(seconds=1)], [3.0], ["uncertain"])
    into_historian(api, "ring-in", one_more, tmp_path)  # only the new point crosses the wire
    api.wait_for(
        lambda: remote.live.windows(["ring.a"], stamps[0])["ring.a"][2].tolist() == [0, 0, 0, 1],
        timeout=10,
        what="the new point",
    )


def test_tables_pages_sql_and_export_through_the_service(api, remote, tags_stored, tmp_path):
    names = {o["name"]: o for o in remote.data.objects()}
    assert names.keys() == {o["name"] for o in api.client.get("/data/objects").json()} and "tags" in names
    total = names["tags"]["rows"]  # these 8 first; other tests of the module may add theirs after
    assert total >= 8
    page = remote.data.preview_object("tags", offset=2, limit=3)
    assert page["total"] == total and page["offset"] == 2
    frame = page["frame"]
    assert isinstance(frame.schema["timestamp"], pl.Datetime) and frame.schema["value"] == pl.Float64
    assert frame.select("tag", "value").rows() == [("t1", 10.0), ("t1", 20.0), ("t2", 5.0)]  # stored order

    result = remote.data.sql(
        "SELECT tag, sum(value) AS total FROM tags WHERE tag IN ('t1', 't2') GROUP BY tag ORDER BY tag",
        limit=1,
    )
    assert result["rows"] == 1 and result["truncated"] is True
    assert result["frame"].to_dicts() == [{"tag": "t1", "total": 34.0}]
    with pytest.raises(Exception, match=r"SQL console: .*read-only") as refused:
        remote.data.sql("DROP TABLE tags")
    assert "\n" not in str(refused.value)
    assert "tags" in {o["name"] for o in remote.data.objects()}  # nothing changed

    target = tmp_path / "out" / "tags.csv"
    assert remote.data.export_object("tags", target).result(30) == target
    assert pl.read_csv(target).height == total
    parquet = remote.data.export_object("tags", tmp_path / "out" / "tags.parquet").result(30)
    assert pl.read_parquet(parquet).filter(pl.col("tag").is_in(["t1", "t2"]))["value"].sum() == 60.0
    with pytest.raises(Exception, match="no table or view 'nowhere'"):
        remote.data.export_object("nowhere", tmp_path / "out" / "x.csv").result(30)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "tags.csv",
        "tags.parquet",
    ]  # no leftovers
    frame_file = remote.data.export_frame(result["frame"], tmp_path / "out" / "q.parquet").result(30)
    assert pl.read_parquet(frame_file).to_dicts() == [{"tag": "t1", "total": 34.0}]


def test_the_dashboard_counts_today_in_the_clients_time_zone(tmp_path):
    """A service of its own: what it counts today is the one run this test made."""
    from datetime import timezone

    from engine.api.remote import RemoteEngine

    with served_api(tmp_path / "service") as api, RemoteEngine(api.url, api.token) as remote:
        into_historian(api, "tags-in", tag_rows(), tmp_path / "in")
        (run,) = api.client.get("/runs").json()
        started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
        of_day = started - started.replace(hour=0, minute=0, second=0, microsecond=0)
        seconds = int(of_day.total_seconds()) // 60 * 60
        # A client for whom the run began at 00:05 (its today), and one for whom it began at 23:55 the
        # day before: the same moments, told in two offsets.
        after_midnight = timezone(timedelta(seconds=300 - seconds))
        before_midnight = timezone(timedelta(seconds=86100 - seconds))
        now = started + timedelta(minutes=1)
        there = remote.health.summary(now.astimezone(after_midnight))
        wire = api.client.get(
            "/dashboard/summary", params={"now": now.astimezone(after_midnight).isoformat()}
        )
        assert wire.status_code == 200, wire.text
        cards = ("pipelines", "runs_today", "rows_today", "failures_today", "active_streams")
        assert {c: there[c] for c in cards} == {c: wire.json()[c] for c in cards}
        assert (there["runs_today"], there["rows_today"], there["failures_today"]) == (1, 8, 0)
        assert there["active_streams"] == 0
        later = (started + timedelta(minutes=10)).astimezone(before_midnight)
        assert remote.health.summary(later)["runs_today"] == 0
        recent = remote.health.summary(recent=5)["recent_runs"]
        assert [r["run_id"] for r in recent] == [run["run_id"]]
