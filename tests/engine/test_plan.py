"""Compile once: `validate()` gives one typed Plan; the executor and the streaming runner run it
and parse nothing again (engine/spec/plan.py)."""

from __future__ import annotations

import dataclasses
import threading
from typing import ClassVar

import polars as pl
import pytest
from pydantic import model_validator

from engine.connectors import registry
from engine.connectors.base import Connector, ConnectorConfig, Source
from engine.errors import SpecError
from engine.runner import preview_pipeline, run_pipeline
from engine.spec.plan import SECRET_MASK, Capabilities, Plan
from engine.spec.validate import Compiled, validate
from engine.streaming.run import run_streaming
from engine.transforms.filtering import RecordFilterConfig
from engine.workspace import Workspace
from tests.engine.streaming_sources import TicksConfig, TickSource

PARSES: dict[str, int] = {}


class CountedConfig(ConnectorConfig):
    """A config that counts how often it is parsed."""

    rows: int = 3
    token: str = "none"

    @model_validator(mode="before")
    @classmethod
    def _count(cls, data):
        PARSES["counted"] = PARSES.get("counted", 0) + 1
        return data


class CountedSource(Source):
    config: CountedConfig
    seen_tokens: ClassVar[list[str]] = []

    def read(self, limit=None, batch_rows=0):
        CountedSource.seen_tokens.append(self.config.token)
        yield pl.DataFrame({"n": list(range(self.config.rows))})

    def schema(self):
        return pl.Schema({"n": pl.Int64})


class CountedConnector(Connector):
    connector_type = "test_counted"
    SourceConfig = CountedConfig

    @classmethod
    def make_source(cls, config, ctx, name):
        return CountedSource(config, ctx, name)


class CountedTicksConfig(TicksConfig):
    @model_validator(mode="before")
    @classmethod
    def _count(cls, data):
        PARSES["ticks"] = PARSES.get("ticks", 0) + 1
        return data


class CountedTicks(Connector):
    connector_type = "test_counted_ticks"
    SourceConfig = CountedTicksConfig

    @classmethod
    def make_source(cls, config, ctx, name):
        return TickSource(config, ctx, name)


@pytest.fixture(autouse=True)
def _connectors():
    registry.register(CountedConnector)
    registry.register(CountedTicks)
    PARSES.clear()
    CountedSource.seen_tokens.clear()


@pytest.fixture
def filter_parses(monkeypatch):
    """Counts parses of the filter transformation's config."""
    calls = []
    original = RecordFilterConfig.model_validate.__func__

    def counting(cls, *args, **kwargs):
        calls.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(RecordFilterConfig, "model_validate", classmethod(counting))
    return calls


def batch_doc(token=None) -> dict:
    config = {"rows": 3} if token is None else {"rows": 3, "token": token}
    return {
        "name": "counted",
        "nodes": [
            {"id": "src", "kind": "source", "connector_type": "test_counted", "config": config},
            {
                "id": "keep",
                "kind": "transform",
                "inputs": ["src"],
                "transform": {
                    "type": "record_filter",
                    "condition": {"field": "n", "operator": "gte", "value": 1},
                },
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["keep"],
                "connector_type": "file",
                "config": {"path": "out.csv"},
            },
        ],
    }


def test_validate_gives_a_typed_frozen_plan():
    plan = validate(batch_doc())
    assert isinstance(plan, Plan) and Compiled is Plan
    assert isinstance(plan.configs["src"], CountedConfig) and plan.configs["src"].rows == 3
    assert plan.order.index("src") < plan.order.index("keep") < plan.order.index("out")
    assert plan.capabilities == Capabilities(
        real_time=False,
        row_local=True,
        sources=("src",),
        destinations=("out",),
        stateful=(),
        worker_process=(),
        live_sources=(),
    )
    assert not plan.capabilities.needs_live_sample
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.order = []  # type: ignore[misc]


def test_each_config_is_parsed_once_from_check_to_run(tmp_path, filter_parses):
    plan = validate(batch_doc())
    assert PARSES["counted"] == 1  # the per-part check and the graph build share the parse
    assert len(filter_parses) == 1
    with Workspace(tmp_path / "data") as ws:
        record = run_pipeline(plan, ws, base_dir=tmp_path)
        assert record["status"] == "success" and record["rows_out"] == 2
        preview = preview_pipeline(plan, ws, base_dir=tmp_path)
        assert preview["samples"][("keep", "out")].height == 2
    assert PARSES["counted"] == 1  # the run and the preview validated nothing again
    assert len(filter_parses) == 1


def test_the_streaming_runner_parses_nothing_again(tmp_path):
    doc = {
        "name": "live",
        "nodes": [
            {
                "id": "ticks",
                "kind": "source",
                "connector_type": "test_counted_ticks",
                "config": {"rows_per_batch": 5, "batches": 2},
            },
            {
                "id": "out",
                "kind": "destination",
                "inputs": ["ticks"],
                "connector_type": "duckdb",
                "config": {"table": "live"},
            },
        ],
        "schedule": {"type": "real_time", "batch_size": 5, "max_latency_ms": 20},
    }
    plan = validate(doc)
    assert plan.capabilities.real_time and plan.capabilities.live_sources == ("ticks",)
    assert plan.capabilities.needs_live_sample
    parsed = PARSES["ticks"]
    assert parsed == 1
    cancel = threading.Event()

    def stop_when_done(event):
        if event.get("event") == "micro_batch" and event["sequence"] >= 2:
            cancel.set()

    with Workspace(tmp_path / "data") as ws:
        record = run_streaming(
            plan, ws, seconds=20, cancel=cancel, on_event=stop_when_done, base_dir=tmp_path
        )
    assert record["rows_out"] == 10, record
    assert PARSES["ticks"] == parsed


def test_secrets_stay_unresolved_in_the_plan_and_are_put_in_at_run_time(tmp_path):
    plan = validate(batch_doc(token={"secret": "meter_token"}))
    assert plan.configs["src"].token == SECRET_MASK  # the Plan never holds a secret's value
    assert plan.secrets["src"] == ((("token",), "meter_token"),)
    resolved = plan.config("src", {"meter_token": "s3cret"}.__getitem__)
    assert resolved.token == "s3cret" and resolved.rows == 3
    assert plan.configs["src"].token == SECRET_MASK  # a copy: the Plan is unchanged
    with Workspace(tmp_path / "data") as ws:
        ws.secrets.set("meter_token", "s3cret", use_keyring=False)
        record = run_pipeline(plan, ws, base_dir=tmp_path)
    assert record["status"] == "success"
    assert CountedSource.seen_tokens == ["s3cret"]
    assert PARSES["counted"] == 1


def test_a_cut_down_plan_keeps_its_secrets():
    plan = validate(batch_doc(token={"secret": "meter_token"}))
    part = plan.through("keep")
    assert set(part.order) == {"src", "keep"}
    assert part.config("src", lambda name: f"value of {name}").token == "value of meter_token"
    with pytest.raises(KeyError):
        plan.through("nope")


def test_secrets_in_nested_places_are_put_back_where_they_were():
    from engine.spec.plan import _put, secret_places

    raw = {"devices": [{"name": "a", "auth": {"password": {"secret": "pw"}}}], "user": {"secret": "u"}}
    assert secret_places(raw) == [(("devices", 0, "auth", "password"), "pw"), (("user",), "u")]
    data = {"devices": [{"name": "a", "auth": {"password": "<secret>"}}], "user": "<secret>"}
    out = _put(data, ("devices", 0, "auth", "password"), "x")
    assert out["devices"][0]["auth"]["password"] == "x"
    assert data["devices"][0]["auth"]["password"] == "<secret>"


def test_every_issue_names_its_node():
    doc = batch_doc()
    doc["nodes"][1]["transform"] = {"type": "record_filter"}  # no condition
    with pytest.raises(SpecError) as info:
        validate(doc)
    assert [(i.path, i.node) for i in info.value.issues] == [("nodes[1].transform.condition", "keep")]

    doc = batch_doc()
    doc["nodes"][2]["inputs"] = ["ghost"]  # found when the graph is built
    with pytest.raises(SpecError) as info:
        validate(doc)
    issue = next(i for i in info.value.issues if "ghost" in i.message)
    assert issue.node == "out"
    assert issue.to_dict()["node"] == "out"


def test_issues_of_a_linear_document_name_the_node_made_from_the_step():
    doc = {
        "name": "lin",
        "sources": [{"name": "meters", "connector_type": "test_counted", "config": {"rows": 2}}],
        "transformations": [
            {"type": "record_filter", "condition": {"field": "nope", "operator": "gte", "value": 1}}
        ],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": "o.csv"}}],
    }
    with pytest.raises(SpecError) as info:
        validate(doc)
    issue = info.value.issues[0]
    assert issue.path.startswith("transformations[0]")
    assert issue.node == "record_filter_1"
