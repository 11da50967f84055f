"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): whatever a client sends, the
answer is never a 5xx, and every answer conforms to the document (status codes, content types,
bodies). A real LocalEngine on a tmp data directory is behind the app; the calls go through the ASGI
interface. The event stream is left out (it never ends by itself; tests/service/test_http_api.py
covers it).

Every check of schemathesis runs (no server error, status codes, content types, response bodies and
headers that conform, invalid data rejected, auth not ignored) except `positive_data_acceptance`: a
body the document's schema allows (`{}` is an object) is often no valid pipeline, and its 422 is right.

Each operation is driven by hypothesis directly (`operation.as_strategy()`): schemathesis' own
pytest plugin (`from_fixture`) reads a private attribute that pytest 9 no longer has."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from app.http import create_app
from engine.api import LocalEngine

TOKEN = "fuzz-token-" + "x" * 32
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))  # per operation: ~25 s in all here (bound: < 60 s)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def schema(tmp_path):
    engine = LocalEngine(tmp_path / "data")
    app = create_app(engine, token=TOKEN, listen_host="127.0.0.1")
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH).exclude(path="/events")
    finally:
        engine.close()


@pytest.mark.slow
def test_no_request_gets_a_server_error_and_answers_conform(schema):
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        check()
    assert len(labels) >= 25 and "POST /pipelines" in labels and "GET /events" not in labels
