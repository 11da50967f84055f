"""The tests' one poll-until (tests/waiting.py): it answers the condition's value, or fails naming it."""

from __future__ import annotations

import threading

import pytest

from tests.waiting import wait_for


def test_answers_the_value_once_the_condition_holds():
    box: list[str] = []
    timer = threading.Timer(0.05, box.append, ("ready",))
    timer.start()
    try:
        assert wait_for(lambda: list(box), 10, 0.01, what="the timer") == ["ready"]
    finally:
        timer.cancel()


def test_fails_naming_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"timed out after 0.1 s waiting for the impossible"):
        wait_for(lambda: None, 0.1, 0.01, what="the impossible")
