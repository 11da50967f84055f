"""Hostile pipeline documents (issue 9, C13 and C14's duplicate keys): each one is a single located
error line and exit 2 from both `aggregator validate` and `aggregator run`, in under 2 s; never an
internal error, a hang or a 100 KB message. Validation time grows linearly with the steps.

The cases are files in tests/golden/hostile/: `<case>.json|yaml` beside `<case>.expected.txt`, whose
lines are substrings the error line must hold (the JSON path or YAML line, and what is wrong).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from app.cli import EXIT_INVALID, main
from engine.errors import SpecError
from engine.limits import MAX_DOCUMENT_BYTES, MAX_ECHO_CHARS, MAX_INTEGER_DIGITS, MAX_MESSAGE_CHARS
from engine.spec.validate import validate

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hostile"
CASES = sorted(p for p in GOLDEN.iterdir() if p.suffix in (".json", ".yaml"))
LIMIT_S = 2.0  # CPU seconds of this process (steady on a machine others load)...
WALL_LIMIT_S = 20.0  # ...and a generous wall-clock bound, so that waiting on something also fails


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Import what the CLI imports once, so each case times the work and not Python's imports."""
    main(["validate", str(GOLDEN / "nodes_not_a_list.json")])


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, float]:
    capsys.readouterr()
    start, wall = time.process_time(), time.perf_counter()
    code = main(argv)
    elapsed = time.process_time() - start
    assert time.perf_counter() - wall < WALL_LIMIT_S, f"{argv[0]} took {time.perf_counter() - wall:.2f} s"
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, f"{argv[0]}: expected one error line, got {len(lines)}: {err[:500]!r}"
    return code, lines[0], elapsed


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 20
    for case in CASES:
        assert case.with_name(case.stem + ".expected.txt").is_file(), case.name


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_spec_is_one_located_line(
    case: Path, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = [
        line for line in case.with_name(case.stem + ".expected.txt").read_text("utf-8").splitlines() if line
    ]
    argv = [command, str(case)] + (["--data-dir", str(tmp_path / "data")] if command == "run" else [])
    code, line, elapsed = _error_line(capsys, argv)
    assert code == EXIT_INVALID, line
    assert line.startswith(f"error: {case}: "), line
    assert "internal error" not in line and "Traceback" not in line
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    assert len(line) < len(str(case)) + 2 * MAX_MESSAGE_CHARS, f"{len(line)} characters"
    assert elapsed < LIMIT_S, f"{command} took {elapsed:.2f} s"


def test_long_values_are_echoed_cut_short(capsys: pytest.CaptureFixture[str]) -> None:
    _, line, _ = _error_line(capsys, ["validate", str(GOLDEN / "long_value_echoed.json")])
    quoted = line.split("unknown transformation type '", 1)[1].split("'", 1)[0]
    assert quoted == "x" * MAX_ECHO_CHARS + "…"


def test_a_document_over_the_size_limit_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.json"
    filler = "x" * (MAX_DOCUMENT_BYTES + 1)
    path.write_text(json.dumps({"name": "huge", "description": filler, "sources": []}))
    for command in ("validate", "run"):
        argv = [command, str(path)] + (["--data-dir", str(tmp_path / "data")] if command == "run" else [])
        code, line, elapsed = _error_line(capsys, argv)
        assert code == EXIT_INVALID
        assert line == f"error: {path}: a pipeline document is at most 10 MiB"
        assert elapsed < LIMIT_S


def test_json_duplicate_keys_are_all_named_with_their_paths() -> None:
    from engine.spec.io import parse_document

    text = '{"name": "a", "sources": [{"name": "s", "name": "t", "config": {"k": 1, "k": 2}}], "name": "b"}'
    with pytest.raises(SpecError) as info:
        parse_document(text)
    assert [str(i) for i in info.value.issues] == [
        "name: duplicate key 'name' (keys are unique)",
        "sources[0].name: duplicate key 'name' (keys are unique)",
        "sources[0].config.k: duplicate key 'k' (keys are unique)",
    ]


def test_in_memory_documents_get_the_same_checks() -> None:
    """The editor and the API validate dicts that never went through a file."""
    deep: list = []
    for _ in range(2000):
        deep = [deep]
    for doc, path, message in [
        ({"name": "d", "sources": deep}, "sources[0][0][0]", "nested more than 64 levels deep"),
        ({"name": "n", "nodes": 5}, "nodes", "Input should be a valid list"),
        ({"name": "t", "sources": [], "transformations": "abc"}, "transformations", "valid list"),
        ({"name": "i", "sources": [{"name": 10**500}]}, "sources[0].name", "at most 100 digits"),
        ({"name": "s\udfff", "sources": []}, "name", "lone surrogate (U+DFFF)"),
    ]:
        start, wall = time.process_time(), time.perf_counter()
        with pytest.raises(SpecError) as info:
            validate(doc)
        assert time.process_time() - start < LIMIT_S and time.perf_counter() - wall < WALL_LIMIT_S
        issues = info.value.issues
        assert any(i.path.startswith(path) and message in i.message for i in issues), issues


# ---- validation is linear in the number of steps ---------------------------------------------
def tmp_out(csv: Path) -> Path:
    return csv.with_name("out.csv")


def _linear_doc(steps: int, csv: Path) -> dict:
    kinds = [
        {"type": "field_mapping", "field_name": "name", "operation": "uppercase"},
        {"type": "record_filter", "condition": {"field": "value", "operator": "gt", "value": 0}},
        {"type": "field_operation", "field_name": "value", "operation": "round", "parameters": {"digits": 2}},
    ]
    return {
        "name": "long",
        "sources": [{"name": "in", "connector_type": "file", "config": {"path": str(csv)}}],
        "transformations": [kinds[i % len(kinds)] for i in range(steps)],
        "destinations": [{"name": "out", "connector_type": "file", "config": {"path": str(tmp_out(csv))}}],
    }


def _graph_doc(steps: int, csv: Path) -> dict:
    """The same chain as a graph listed consumers first (the worst order for a recursive sort)."""
    nodes = [{"id": "in", "kind": "source", "connector_type": "file", "config": {"path": str(csv)}}]
    for i in range(steps):
        step = {"type": "field_mapping", "field_name": "name", "operation": "uppercase"}
        nodes.append({"id": f"t{i}", "kind": "transform", "inputs": [nodes[-1]["id"]], "transform": step})
    nodes.append({"id": "out", "kind": "destination", "inputs": [nodes[-1]["id"]], "connector_type": "file"})
    nodes[-1]["config"] = {"path": str(tmp_out(csv))}
    return {"name": "long graph", "nodes": nodes[::-1]}


def _seconds(doc: dict) -> float:
    start = time.process_time()  # this process's CPU time: steady on a machine others load
    compiled = validate(doc)
    elapsed = time.process_time() - start
    assert len(compiled.order) == len(compiled.graph.nodes)
    return elapsed


def test_validation_time_is_linear_in_steps(tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("name,value\nalpha,1.5\n")
    validate(_linear_doc(100, csv))  # imports and caches outside the timing
    wall = time.perf_counter()
    t8 = min(_seconds(_linear_doc(8_000, csv)) for _ in range(2))
    assert t8 < 6.0, f"8k steps should validate in a few seconds of CPU, took {t8:.2f} s"
    assert time.perf_counter() - wall < 30.0, "8k steps should not wait on anything"
    t32 = _seconds(_linear_doc(32_000, csv))
    # 4x the steps: linear is 4x the CPU, quadratic 16x. The bound sits between them, 2x from
    # each: CPU time on a loaded machine (caches and cores shared) varied by 1.4x at 16k -> 32k,
    # which failed the former bound of 2.5x for 2x the steps once in CI.
    assert t32 <= 8 * t8, f"8k steps: {t8:.2f} s, 32k: {t32:.2f} s"


def test_a_long_graph_in_reverse_order_validates(tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("name,value\nalpha,1.5\n")
    assert _seconds(_graph_doc(8_000, csv)) < 6.0


@pytest.mark.parametrize("yaml_syntax", [False, True])
def test_whole_numbers_up_to_the_digit_limit_are_read(yaml_syntax: bool) -> None:
    from engine.spec.io import parse_document

    for digits, ok in ((MAX_INTEGER_DIGITS, True), (MAX_INTEGER_DIGITS + 1, False)):
        text = '{"name": "n", "limit": -' + "9" * digits + "}"
        if ok:
            assert parse_document(text, yaml_syntax=yaml_syntax)["limit"] == -int("9" * digits)
            continue
        with pytest.raises(SpecError, match=f"a whole number of {digits} digits"):
            parse_document(text, yaml_syntax=yaml_syntax)
    with pytest.raises(SpecError, match="more than 100 digits"):
        validate({"name": "n", "sources": [], "limit": 10**MAX_INTEGER_DIGITS})
