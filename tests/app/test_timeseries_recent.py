"""`/analytics/timeseries` of "the last WINDOW": requests asking the same question at about the same
time share one computation (app/http/routes_monitoring.py `_Recent`)."""

from __future__ import annotations

import asyncio

import pytest

from app.http import routes_monitoring
from app.http.routes_monitoring import _Recent


def test_identical_questions_at_the_same_time_are_computed_once():
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.01)  # the other requests arrive while this one computes
        return {"n": len(calls)}

    async def main():
        recent = _Recent()
        answers = await asyncio.gather(*(recent.answer(("a",), compute) for _ in range(10)))
        again = await recent.answer(("a",), compute)  # within RECENT_S: the same answer
        other = await recent.answer(("b",), compute)  # another question: computed
        return answers, again, other

    answers, again, other = asyncio.run(main())
    assert answers == [{"n": 1}] * 10
    assert again == {"n": 1}
    assert other == {"n": 2}
    assert len(calls) == 2


def test_an_answer_is_computed_again_after_recent_s(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(routes_monitoring.time, "monotonic", lambda: clock[0])
    count = [0]

    async def compute():
        count[0] += 1
        return {"n": count[0]}

    async def main():
        recent = _Recent()
        first = await recent.answer(("a",), compute)
        clock[0] += routes_monitoring.RECENT_S / 2
        second = await recent.answer(("a",), compute)
        clock[0] += routes_monitoring.RECENT_S
        third = await recent.answer(("a",), compute)
        return first, second, third

    assert asyncio.run(main()) == ({"n": 1}, {"n": 1}, {"n": 2})


def test_an_error_reaches_every_waiter_and_is_not_kept():
    count = [0]

    async def failing():
        count[0] += 1
        await asyncio.sleep(0.01)
        raise ValueError("bad tag")

    async def fine():
        return {"ok": True}

    async def main():
        recent = _Recent()
        results = await asyncio.gather(
            *(recent.answer(("a",), failing) for _ in range(3)), return_exceptions=True
        )
        after = await recent.answer(("a",), fine)
        return results, after

    results, after = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results)
    assert count[0] == 1
    assert after == {"ok": True}


def test_a_waiter_computes_itself_when_the_first_request_is_cancelled():
    async def slow():
        await asyncio.sleep(10)
        return {"slow": True}

    async def quick():
        return {"quick": True}

    async def main():
        recent = _Recent()
        first = asyncio.create_task(recent.answer(("a",), slow))
        await asyncio.sleep(0)
        second = asyncio.create_task(recent.answer(("a",), quick))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(main()) == {"quick": True}
