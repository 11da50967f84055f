"""Properties of the rest_api connector's two parsers: the JSONPath subset and RFC 8288 Link
headers (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.connectors.rest_api import format_path, parse_link_header, parse_path, records_at, select

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
steps = st.lists(
    st.one_of(
        names.map(lambda n: ("key", n)),
        st.integers(-5, 50).map(lambda i: ("index", i)),
        st.just(("all", None)),
    ),
    max_size=6,
).map(tuple)


@given(steps)
def test_path_round_trip(parsed):
    assert parse_path(format_path(parsed)) == parsed


@given(st.text(max_size=30))
def test_path_parser_never_crashes(text):
    try:
        parsed = parse_path(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert parse_path(format_path(parsed)) == parsed


@given(st.lists(st.dictionaries(names, st.integers(), max_size=3), max_size=5), names)
def test_records_found_where_they_are(records, key):
    assert records_at({key: records}, parse_path(format_path((("key", key),)))) == records
    assert records_at({key: records}, (("key", key), ("all", None))) == records
    assert records_at(records, None) == records


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.data.items", (("key", "data"), ("key", "items"))),
        ("$.results[*]", (("key", "results"), ("all", None))),
        ("$.a.*", (("key", "a"), ("all", None))),
        ("$['a b'][\"c\"][-1]", (("key", "a b"), ("key", "c"), ("index", -1))),
        ("$['it\\'s']", (("key", "it's"),)),
    ],
)
def test_path_examples(path, steps):
    assert parse_path(path) == steps


@pytest.mark.parametrize("bad", ["data.items", "$..x", "$[?(@.a)]", "$[1:2]", "$.", "$['a'", "$ .a"])
def test_path_refused(bad):
    with pytest.raises(ValueError, match="records path"):
        parse_path(bad)


def test_select_misses_are_empty():
    assert select({"a": [1]}, (("key", "b"),)) == []
    assert select({"a": [1]}, (("key", "a"), ("index", 5))) == []
    assert select({"a": {"x": 1, "y": 2}}, (("key", "a"), ("all", None))) == [1, 2]


# --- Link headers ------------------------------------------------------------------------------

urls = st.text(
    st.characters(codec="ascii", categories=("L", "N"), include_characters="/:?=&.-_%"),
    min_size=1,
    max_size=30,
)
rel_names = st.sampled_from(["next", "prev", "last", "first", "NEXT", "alternate"])
extra = st.sampled_from(
    ["", '; title="a, b; c"', "; type=text/html", '; title="quote \\" in"', ";  hreflang=en "]
)


@given(
    st.lists(st.tuples(urls, st.lists(rel_names, min_size=1, max_size=3), extra, st.booleans()), max_size=5)
)
def test_link_header_round_trip(links):
    parts, expected = [], {}
    for url, rels, more, quoted in links:
        rel = " ".join(rels)
        rel_text = f'rel="{rel}"' if quoted or len(rels) > 1 else f"rel={rel}"
        parts.append(f"<{url}>{more}; {rel_text}")
        for r in rels:
            expected.setdefault(r.lower(), url)
    assert parse_link_header(", ".join(parts)) == expected


@given(st.text(max_size=60))
def test_link_header_never_crashes(text):
    assert isinstance(parse_link_header(text), dict)


def test_link_header_examples():
    github = (
        '<https://api.github.com/repositories/1/issues?page=2>; rel="next", '
        '<https://api.github.com/repositories/1/issues?page=5>; rel="last"'
    )
    assert parse_link_header(github) == {
        "next": "https://api.github.com/repositories/1/issues?page=2",
        "last": "https://api.github.com/repositories/1/issues?page=5",
    }
    assert parse_link_header('</p?x=1>; rel="prev"') == {"prev": "/p?x=1"}
    assert parse_link_header("") == {} and parse_link_header(None) == {}
