"""The problems list follows the open document: opening another pipeline never shows the previous
one's problems, not even for the moment its validation takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

ROOT = Path(__file__).resolve().parents[2]
ECOMMERCE = ROOT / "resources" / "pipelines" / "ecommerce_orders.json"


@pytest.fixture
def editor(window):
    return window.show_page("editor")


def problem_lines(page) -> list[str]:
    return [page.problems.item(i).text() for i in range(page.problems.count())]


def test_opening_another_pipeline_drops_the_old_problems_at_once(qtbot, editor):
    page = editor
    good = json.loads(ECOMMERCE.read_text())
    broken = json.loads(ECOMMERCE.read_text())
    broken["nodes"][0]["config"].pop("path")  # a source without its file
    broken_id = broken["nodes"][0]["id"]

    with qtbot.waitSignal(page.validated, timeout=30_000):
        page.load_document(broken)
    assert any(broken_id in line for line in problem_lines(page)), problem_lines(page)
    assert page.canvas._errors.get(broken_id)

    with qtbot.waitSignal(page.validated, timeout=30_000) as checked:
        page.load_document(good)
        # Before the new document's validation has come back: nothing of the old one is shown.
        assert problem_lines(page) == ["… Checking the pipeline"]
        assert page.canvas._errors == {}
    assert checked.args == [[]]
    assert problem_lines(page) == ["✓ No problems: the pipeline is valid."]
