"""Fixtures of the engine's tests."""

from __future__ import annotations

import polars as pl
import pytest


@pytest.fixture
def query_errors(monkeypatch) -> list[BaseException]:
    """What `pl.collect_all` raised during the test, in order: a cancelled one-query run must stop
    its query itself (raise out of it), not only check the cancellation after it ran to its end."""
    raised: list[BaseException] = []
    collect_all = pl.collect_all

    def recording(queries, *args, **kwargs):
        try:
            return collect_all(queries, *args, **kwargs)
        except BaseException as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(pl, "collect_all", recording)
    return raised
