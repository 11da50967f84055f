"""engine/api/events.py: the event records behave as the frozen, keyword-only dataclasses they
replaced (compare, hash, print, pickle, refuse assignment), every kind round-trips through its wire
dict, and a bad wire dict or call says which field."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

import engine.api.events as events


def test_every_kind_is_found_and_round_trips():
    assert len(events.CATALOGUE) == 15
    for kind, cls in events.CATALOGUE.items():
        assert cls.kind == kind and cls.__qualname__ == cls.__name__
        assert getattr(events, cls.__name__) is cls
        assert issubclass(cls, events.EngineEvent)
    alarm = events.Alarm(alarm="queue_full", run_id="r", rows=3)
    assert pickle.loads(pickle.dumps(alarm)) == alarm
    assert events.event_from_dict(alarm.to_dict()) == alarm
    assert alarm.to_dict() == {
        "event": "alarm",
        "kind": "queue_full",  # the alarm's own kind rides under its wire name
        "run_id": "r",
        "node": None,
        "rows": 3,
        "reason": "",
        "total_dropped": 0,
    }
    unknown = events.event_from_dict({"event": "from_a_newer_service", "job": "j", "x": 1})
    assert type(unknown) is events.UnknownEvent and unknown.to_dict() == {
        "event": "from_a_newer_service",
        "job": "j",
        "x": 1,
    }


def test_fields_come_in_order_a_bases_first_with_their_defaults():
    assert events.NodeProgress.fields == (
        "job",
        "extra",
        "run_id",
        "node",
        "status",
        "rows_in",
        "rows_out",
        "rows_rejected",
        "duration_s",
    )
    assert events.JobStarted.fields == ("job", "extra", "job_kind", "running")
    progress = events.NodeProgress(node="n1")
    assert (progress.job, progress.run_id, progress.status, progress.rows_in) == (None, None, "", 0)
    other = events.NodeProgress(node="n2")
    assert progress.extra == {} and progress.extra is not other.extra  # a new dict each
    assert repr(progress) == (
        "NodeProgress(job=None, extra={}, run_id=None, node='n1', status='', rows_in=0, rows_out=0,"
        " rows_rejected=0, duration_s=0.0)"
    )


def test_a_record_is_frozen_and_compares_by_its_fields():
    started = events.RunStarted(run_id="r1", pipeline="p")
    with pytest.raises(dataclasses.FrozenInstanceError):
        started.run_id = "r2"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del started.pipeline
    assert started == events.RunStarted(run_id="r1", pipeline="p")
    assert started != events.RunStarted(run_id="r1", pipeline="q")
    assert started != events.RunFinished(run_id="r1", status="success")  # another kind
    assert started.__eq__("r1") is NotImplemented
    with pytest.raises(TypeError):  # hashed by its fields, as the frozen dataclass was: `extra`
        hash(started)  # is a dict, so no record is hashable (none is used as a key)


def test_a_bad_call_or_wire_dict_names_the_field():
    with pytest.raises(TypeError, match=r"RunStarted.* 'run_id'"):
        events.RunStarted(pipeline="p")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        events.RunStarted(run_id="r", colour="red")
    with pytest.raises(TypeError):
        events.RunStarted("r")  # type: ignore[misc]  # keyword-only
    with pytest.raises(ValueError, match=r"event 'run_finished': .*'status'"):
        events.event_from_dict({"event": "run_finished", "run_id": "r"})


def test_a_name_the_module_does_not_have_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchEvent"):
        events.NoSuchEvent  # noqa: B018
