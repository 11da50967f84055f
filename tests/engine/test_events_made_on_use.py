"""engine/api/events.py makes its rarer record classes on first use (module `__getattr__`): a
one-shot batch run creates none of them (each frozen dataclass costs ~1 ms of CPU to create), and a
class made on use is one class object for every caller, thread and pickle, found by its kind in
CATALOGUE as before."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from pathlib import Path

import engine.api.events as events

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_engine_makes_none_of_them():
    probe = (
        "import engine.api, engine.api.local, engine.api.events as ev; "
        "print(sorted(n for n in ev._MADE_ON_USE if n in vars(ev)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_class_made_on_use_is_one_class_for_every_caller():
    probe = """
import threading, engine.api.events as ev
seen, start = [], threading.Barrier(8)
def take():
    start.wait()
    seen.append(ev.SinkRetry)
threads = [threading.Thread(target=take) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
from engine.api.events import SinkRetry
assert len({id(c) for c in seen}) == 1 and seen[0] is SinkRetry is ev.CATALOGUE["sink_retry"]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_every_kind_is_found_and_round_trips():
    assert len(events.CATALOGUE) == 15
    for kind, cls in events.CATALOGUE.items():
        assert cls.kind == kind and cls.__qualname__ == cls.__name__
        assert getattr(events, cls.__name__) is cls
        assert issubclass(cls, events.EngineEvent)
    alarm = events.Alarm(alarm="queue_full", run_id="r", rows=3)
    assert pickle.loads(pickle.dumps(alarm)) == alarm
    assert repr(alarm).startswith("Alarm(")
    assert events.event_from_dict(alarm.to_dict()) == alarm
    unknown = events.event_from_dict({"event": "from_a_newer_service", "job": "j", "x": 1})
    assert type(unknown) is events.UnknownEvent and unknown.to_dict() == {
        "event": "from_a_newer_service",
        "job": "j",
        "x": 1,
    }


def test_a_name_the_module_does_not_have_is_an_attribute_error():
    try:
        events.NoSuchEvent  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchEvent" in str(exc)
    else:
        raise AssertionError("no AttributeError")
    assert not hasattr(events, "NoSuchEvent")
    assert threading.current_thread()  # the lock is not held after an unknown name
    assert events._making.acquire(blocking=False)
    events._making.release()
