"""Issue 14, item 5: a spec names files only inside the allowed roots (the data directory and the
folders an admin lists), and loads plugins only once an admin enabled them. Refused at validation,
one line each, with the JSON path of the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import main
from engine.context import RunContext
from engine.errors import ConnectorError, SpecError, TransformError
from engine.spec.paths_policy import HOW_TO_ADD, confine
from engine.spec.validate import validate

OUTSIDE = "outside the allowed folders"


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A data directory and one admin folder; everything else in tmp_path is outside."""
    data = tmp_path / "data"
    shared = tmp_path / "shared"
    outside = tmp_path / "elsewhere"
    for folder in (data, shared, outside):
        folder.mkdir()
    monkeypatch.setenv("AGGREGATOR_HOME", str(data))
    monkeypatch.setenv("AGGREGATOR_ALLOWED_ROOTS", str(shared))
    monkeypatch.setenv("AGGREGATOR_PLUGINS_ENABLED", "false")
    (outside / "secret.csv").write_text("a\n1\n")
    (shared / "in.csv").write_text("a\n1\n")
    return {"data": data, "shared": shared, "outside": outside}


def source(ctype: str, config: dict, **extra) -> dict:
    return {"id": "src", "kind": "source", "connector_type": ctype, "config": config, **extra}


def sink(ctype: str, config: dict) -> dict:
    return {"id": "dst", "kind": "destination", "inputs": ["src"], "connector_type": ctype, "config": config}


def graph(*nodes: dict, **top) -> dict:
    return {"name": "p", "spec_version": 1, "nodes": list(nodes), **top}


def issues(doc: dict, ctx: RunContext | None = None) -> list:
    with pytest.raises(SpecError) as caught:
        validate(doc, check_schemas=False, ctx=ctx)
    return caught.value.issues


def only_issue(doc: dict, ctx: RunContext | None = None):
    found = issues(doc, ctx)
    assert len(found) == 1, [str(i) for i in found]
    assert "\n" not in str(found[0])
    return found[0]


def test_inside_the_data_dir_and_an_admin_folder_is_valid(roots):
    doc = graph(
        source("file", {"path": str(roots["shared"] / "in.csv")}),
        sink("file", {"path": str(roots["data"] / "out" / "x.parquet")}),
    )
    plan = validate(doc, check_schemas=False)
    assert [n.id for n in plan.graph.nodes] == ["src", "dst"]


def test_an_absolute_path_outside_is_refused_with_its_json_path(roots):
    secret = roots["outside"] / "secret.csv"
    issue = only_issue(graph(source("file", {"path": str(secret)}), sink("file", {"path": "out.csv"})))
    assert issue.path == "nodes[0].config.path"
    assert OUTSIDE in issue.message and str(secret) in issue.message
    assert str(roots["shared"]) in issue.allowed  # what is allowed
    assert "aggregator settings add allowed_roots" in issue.message  # and how an admin widens it


def test_dot_dot_out_of_the_spec_folder_is_refused(roots):
    spec_dir = roots["data"] / "pipelines"
    spec_dir.mkdir()
    doc = graph(source("file", {"path": "../../elsewhere/secret.csv"}), sink("file", {"path": "out.csv"}))
    issue = only_issue(doc, RunContext(base_dir=spec_dir))
    assert issue.path == "nodes[0].config.path" and OUTSIDE in issue.message
    # with no spec folder known yet (a spec saved through the API), the run checks it
    validate(doc, check_schemas=False)
    # '..' that stays inside a root is fine
    validate(
        graph(source("file", {"path": "../exports/in.csv"}), sink("file", {"path": "out.csv"})),
        check_schemas=False,
        ctx=RunContext(base_dir=spec_dir),
    )


def test_a_symbolic_link_is_followed(roots):
    link = roots["shared"] / "innocent.csv"
    link.symlink_to(roots["outside"] / "secret.csv")
    issue = only_issue(graph(source("file", {"path": str(link)}), sink("file", {"path": "o.csv"})))
    assert "resolves to" in issue.message and str(roots["outside"] / "secret.csv") in issue.message
    folder_link = roots["data"] / "linked"
    folder_link.symlink_to(roots["outside"], target_is_directory=True)
    issue = only_issue(
        graph(source("file", {"path": str(folder_link / "*.csv")}), sink("file", {"path": "o.csv"}))
    )
    assert issue.path == "nodes[0].config.path"


def test_globs(roots):
    ok = graph(
        source("file", {"path": str(roots["shared"] / "**" / "*.csv")}), sink("file", {"path": "o.csv"})
    )
    validate(ok, check_schemas=False)
    climbing = str(roots["shared"] / "*" / ".." / ".." / "elsewhere" / "secret.csv")
    issue = only_issue(graph(source("file", {"path": climbing}), sink("file", {"path": "o.csv"})))
    assert "'..' after a wildcard" in issue.message


@pytest.mark.parametrize(
    ("node", "where"),
    [
        (sink("file", {"path": "{outside}/out.csv"}), "nodes[1].config.path"),
        (sink("sqlite", {"path": "{outside}/x.db", "table": "t"}), "nodes[1].config.path"),
        (sink("duckdb", {"database": "{outside}/x.duckdb", "table": "t"}), "nodes[1].config.database"),
    ],
)
def test_every_destination_that_names_a_file(roots, node, where):
    node = {**node, "config": {k: v.format(**roots) for k, v in node["config"].items()}}
    issue = only_issue(graph(source("file", {"path": str(roots["shared"] / "in.csv")}), node))
    assert issue.path == where and OUTSIDE in issue.message


def test_sources_and_certificate_files_that_name_a_file(roots):
    out = roots["outside"]
    doc = graph(
        source("sqlite", {"path": str(out / "x.db"), "table": "t"}),
        {
            "id": "mq",
            "kind": "source",
            "connector_type": "duckdb",
            "config": {"database": str(out / "h.duckdb"), "table": "t"},
        },
        {
            "id": "nats",
            "kind": "destination",
            "inputs": ["src"],
            "connector_type": "nats",
            "config": {
                "subject": "a.b",
                "tls": {
                    "ca_file": str(out / "ca.pem"),
                    "cert_file": str(roots["data"] / "c.pem"),
                    "key_file": str(roots["data"] / "c.key"),
                },
            },
        },
        schedule={"type": "file_arrival", "path": str(out / "*.csv")},
    )
    found = {i.path for i in issues(doc) if OUTSIDE in i.message}
    assert found == {
        "nodes[0].config.path",
        "nodes[1].config.database",
        "nodes[2].config.tls.ca_file",
        "schedule.path",
    }


def test_linear_form_names_its_own_paths(roots):
    doc = {
        "name": "p",
        "sources": [
            {"name": "a", "connector_type": "file", "config": {"path": str(roots["outside"] / "secret.csv")}}
        ],
        "destinations": [
            {"name": "b", "connector_type": "file", "config": {"path": str(roots["data"] / "o.csv")}}
        ],
    }
    issue = only_issue(doc)
    assert issue.path == "sources[0].config.path" and OUTSIDE in issue.message


def test_a_secret_as_a_path_is_checked_at_run_time_not_refused_here(roots):
    doc = graph(source("file", {"path": {"secret": "WHERE"}}), sink("file", {"path": "o.csv"}))
    with pytest.raises(SpecError) as caught:  # the file connector wants text: the model says so
        validate(doc, check_schemas=False)
    assert not any(OUTSIDE in i.message for i in caught.value.issues)


def test_an_admin_adds_a_folder_with_the_settings_command(roots, monkeypatch, capsys):
    monkeypatch.delenv("AGGREGATOR_ALLOWED_ROOTS")
    doc = graph(
        source("file", {"path": str(roots["outside"] / "secret.csv")}), sink("file", {"path": "o.csv"})
    )
    assert OUTSIDE in only_issue(doc).message
    assert main(["settings", "add", "allowed_roots", str(roots["outside"])]) == 0
    validate(doc, check_schemas=False)
    assert main(["settings", "remove", "allowed_roots", str(roots["outside"])]) == 0
    assert OUTSIDE in only_issue(doc).message
    assert main(["settings", "add", "allowed_roots", "relative/dir"]) == 2
    assert "is not an absolute folder path" in capsys.readouterr().err


def test_validate_command_exits_2_with_one_line(roots, tmp_path, capsys):
    spec = roots["data"] / "p.json"
    spec.write_text(
        '{"name": "p", "nodes": [{"id": "s", "kind": "source", "connector_type": "file",'
        f' "config": {{"path": "{roots["outside"] / "secret.csv"}"}}}}]}}'
    )
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("nodes[0].config.path" in line and OUTSIDE in line for line in err), err
    assert "Traceback" not in "\n".join(err)


# ---- plugins -----------------------------------------------------------------------------------
PY_DOC = graph(
    source("file", {"path": "in.csv"}),
    {"id": "py", "kind": "transform", "inputs": ["src"], "transform": {"type": "python", "function": "m:f"}},
    {
        "id": "c",
        "kind": "destination",
        "inputs": ["py"],
        "connector_type": "custom",
        "config": {"implementation": "m.K"},
    },
)


def test_plugins_are_off_until_an_admin_enables_them(roots, monkeypatch):
    found = {i.path: i.message for i in issues(PY_DOC)}
    assert set(found) == {"nodes[1].transform.function", "nodes[2].config.implementation"}
    assert all("plugins are disabled" in m and "plugins_enabled true" in m for m in found.values())
    monkeypatch.delenv("AGGREGATOR_PLUGINS_ENABLED")
    assert main(["settings", "set", "plugins.enabled", "true"]) == 0
    validate(PY_DOC, check_schemas=False)
    assert main(["settings", "set", "plugins.enabled", "false"]) == 0
    assert len(issues(PY_DOC)) == 2


def test_the_loader_refuses_too(roots):
    from engine.transforms.code import load_plugin

    plugins = roots["data"] / "plugins"
    plugins.mkdir()
    (plugins / "m.py").write_text("def f(df):\n    return df\n")
    with pytest.raises(TransformError, match="plugins are disabled"):
        load_plugin("m:f", plugins)
    os.environ["AGGREGATOR_PLUGINS_ENABLED"] = "true"  # monkeypatch restores it
    assert load_plugin("m:f", plugins)(5) == 5


# ---- the rule itself ---------------------------------------------------------------------------
SEGMENT = st.sampled_from(["a", "b", "..", ".", "c.csv", "in.csv"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(SEGMENT, min_size=1, max_size=7))
def test_what_confine_accepts_lies_inside_a_root(tmp_path, parts):
    root = tmp_path / "root"
    base = root / "x" / "y"
    base.mkdir(parents=True, exist_ok=True)
    relative = os.path.join(*parts)
    reason = confine(relative, base, [root.resolve()])
    inside = Path(os.path.normpath(base / relative)).is_relative_to(root)
    assert (reason is None) == inside, (relative, reason)


def test_saved_connectors_and_connection_tests_obey_the_same_rules(roots):
    from engine.api.local import LocalEngine

    engine = LocalEngine(roots["data"])
    try:
        secret = str(roots["outside"] / "secret.csv")
        found = engine.connectors.check("file", "source", {"path": secret})
        assert [i["path"] for i in found] == ["path"] and OUTSIDE in found[0]["message"]
        assert engine.connectors.check("file", "source", {"path": str(roots["shared"] / "in.csv")}) == []
        custom = engine.connectors.check("custom", "source", {"implementation": "m.K"})
        assert [i["path"] for i in custom] == ["implementation"] and "plugins are disabled" in custom[0][
            "message"
        ]
        result = engine.connectors.test("file", "source", {"path": secret}).result(30)
        assert result["ok"] is False and result["error"].startswith("path: ") and OUTSIDE in result["error"]
    finally:
        engine.close()


def test_a_glob_match_through_a_symbolic_link_is_refused_when_the_file_is_opened(roots):
    """A `**` glob in an allowed folder passes validation, but a folder link inside it leads
    outside: the file source checks each file it matched, where it opens it."""
    from engine.connectors.file import FileSource, FileSourceConfig

    (roots["shared"] / "lines").mkdir()
    (roots["shared"] / "lines" / "a.csv").write_text("a\n2\n")
    pattern = str(roots["shared"] / "**" / "*.csv")
    ctx = RunContext(run_id="r1", pipeline="p", data_dir=roots["data"], base_dir=roots["data"])
    node = FileSource(FileSourceConfig.model_validate({"path": pattern}), ctx, "src")
    assert [p.name for p in node.files()] == ["in.csv", "a.csv"]  # inside: read as always
    (roots["shared"] / "lines" / "more").symlink_to(roots["outside"], target_is_directory=True)
    validate(graph(source("file", {"path": pattern}), sink("file", {"path": "o.csv"})), check_schemas=False)
    with pytest.raises(ConnectorError) as caught:
        node.files()
    assert str(caught.value) == (
        f"{roots['shared'] / 'lines' / 'more' / 'secret.csv'} (it resolves to"
        f" {roots['outside'] / 'secret.csv'}) is outside the allowed folders; {HOW_TO_ADD}"
    )


def test_the_allowed_folders_in_an_error_are_the_admins_first_and_at_most_four(roots, tmp_path):
    """A long-running process may have opened many data directories: the error stays one short
    line, naming the admin's folders first and how many more there are."""
    from engine.datadir import note_opened
    from engine.spec.paths_policy import SHOWN_ROOTS, allowed_roots

    for i in range(10):
        note_opened(tmp_path / f"opened-{i}")
    issue = only_issue(
        graph(source("file", {"path": str(roots["outside"] / "secret.csv")}), sink("file", {"path": "o.csv"}))
    )
    assert issue.allowed, issue
    assert issue.allowed.startswith(str(roots["shared"].resolve()) + ", ")
    assert issue.allowed.count(", ") == SHOWN_ROOTS - 1
    assert issue.allowed.endswith(
        f" and {len(allowed_roots()) - SHOWN_ROOTS} more (`aggregator settings show`)"
    )
