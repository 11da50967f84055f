"""The rest_api connector against local HTTP servers written here: auth methods (an OAuth token
endpoint with expiry and refresh), every pagination type, 429/Retry-After, 5xx retries, the rate
limiter, records_path, the destination and the one-line errors."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from engine.connectors.rest_api import (
    _TOKENS,
    AuthError,
    RestApiSink,
    RestApiSinkConfig,
    RestApiSource,
    RestApiSourceConfig,
)
from engine.context import RunContext
from engine.errors import ConnectorError, DataError, RunCancelled
from tests.connectors.rest_api_server import Request, RestServer, ok
from tests.waiting import wait_for

RECORDS = [{"id": i, "name": f"wo-{i}", "hours": i * 0.5} for i in range(250)]


@pytest.fixture
def server():
    s = RestServer()
    yield s
    s.close()


@pytest.fixture
def logs():
    return []


@pytest.fixture
def ctx(tmp_path, logs):
    return RunContext(
        data_dir=tmp_path, base_dir=tmp_path, log=lambda level, msg, node=None: logs.append((level, msg))
    )


def source(ctx, **config) -> RestApiSource:
    config.setdefault("retry_backoff", 0.01)
    return RestApiSource(RestApiSourceConfig.model_validate(config), ctx, "cmms")


def read(src: RestApiSource, **kw) -> pl.DataFrame:
    frames = list(src.read(**kw))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def ids(frame: pl.DataFrame) -> list[int]:
    return frame.get_column("id").to_list()


# --- records_path and a single request -----------------------------------------------------------


def test_body_is_the_list(server, ctx):
    server.routes["/items"] = lambda r: ok(RECORDS[:5])
    frame = read(source(ctx, url=server.url, endpoint="/items"))
    assert frame.columns == ["id", "name", "hours"]
    assert ids(frame) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("$.data.items", {"data": {"items": RECORDS[:3]}, "total": 3}),
        ("$.results[*]", {"results": RECORDS[:3]}),
        ("$['the data'][0].rows", {"the data": [{"rows": RECORDS[:3]}]}),
        ("$.pages[*].rows[*]", {"pages": [{"rows": RECORDS[:2]}, {"rows": RECORDS[2:3]}]}),
    ],
)
def test_records_path(server, ctx, path, body):
    server.routes["/x"] = lambda r: ok(body)
    assert ids(read(source(ctx, url=server.url + "/x", records_path=path))) == [0, 1, 2]


def test_records_path_one_object_and_nothing(server, ctx):
    server.routes["/one"] = lambda r: ok({"item": {"id": 7}})
    server.routes["/none"] = lambda r: ok({"items": None})
    assert ids(read(source(ctx, url=server.url + "/one", records_path="$.item"))) == [7]
    assert read(source(ctx, url=server.url + "/none", records_path="$.items")).height == 0


def test_params_headers_and_post_body(server, ctx):
    server.routes["/search"] = lambda r: ok({"hits": [{"q": r.json()["q"], "site": r.query["site"]}]})
    src = source(
        ctx,
        url=server.url,
        endpoint="search",
        method="POST",
        params={"site": "north"},
        headers={"X-Plant": "p1"},
        body={"q": "pump"},
        records_path="$.hits",
    )
    assert read(src).to_dicts() == [{"q": "pump", "site": "north"}]
    assert server.requests("/search")[0].headers["x-plant"] == "p1"


def test_not_json_is_one_line(server, ctx):
    server.routes["/x"] = lambda r: (200, b"<html>oops</html>", {})
    with pytest.raises(Exception) as info:
        read(source(ctx, url=server.url + "/x"))
    assert "not JSON" in str(info.value) and "\n" not in str(info.value)


# --- pagination --------------------------------------------------------------------------------


def paged(r: Request, key: str = "page", size_key: str = "size", start: int = 1, size: int = 100):
    page = int(r.query[key]) - start
    size = int(r.query.get(size_key, size))
    return RECORDS[page * size : (page + 1) * size]


def test_page_pagination_short_page_stops(server, ctx):
    server.routes["/wo"] = lambda r: ok(paged(r))
    src = source(
        ctx,
        url=server.url + "/wo",
        pagination={"type": "page", "page_param": "page", "size_param": "size", "size": 100},
        concurrency=4,
    )
    frame = read(src)
    assert ids(frame) == list(range(250))  # in page order, though fetched 4 at a time
    assert {int(r.query["page"]) for r in server.requests("/wo")} >= {1, 2, 3}
    assert all(r.query["size"] == "100" for r in server.requests("/wo"))


def test_page_pagination_without_size_stops_on_empty_page(server, ctx):
    server.routes["/wo"] = lambda r: ok(paged(r, key="p", start=0, size=40))
    src = source(ctx, url=server.url + "/wo", pagination={"type": "page", "page_param": "p", "start": 0})
    assert ids(read(src)) == list(range(250))


def test_offset_pagination(server, ctx):
    def answer(r):
        off, lim = int(r.query["skip"]), int(r.query["take"])
        return ok({"data": {"items": RECORDS[off : off + lim]}})

    server.routes["/wo"] = answer
    src = source(
        ctx,
        url=server.url + "/wo",
        records_path="$.data.items",
        pagination={"type": "offset", "offset_param": "skip", "limit_param": "take", "limit": 60},
    )
    assert ids(read(src)) == list(range(250))
    offsets = sorted(int(r.query["skip"]) for r in server.requests("/wo"))
    assert offsets[:5] == [0, 60, 120, 180, 240]


def test_cursor_pagination(server, ctx):
    def answer(r):
        at = int(r.query.get("after", 0))
        nxt = at + 100 if at + 100 < len(RECORDS) else None
        return ok({"results": RECORDS[at : at + 100], "meta": {"next_cursor": nxt and str(nxt)}})

    server.routes["/wo"] = answer
    src = source(
        ctx,
        url=server.url + "/wo",
        records_path="$.results",
        pagination={"type": "cursor", "cursor_param": "after", "cursor_path": "$.meta.next_cursor"},
    )
    assert ids(read(src)) == list(range(250))
    assert [r.query.get("after") for r in server.requests("/wo")] == [None, "100", "200"]


def test_cursor_repeated_is_an_error(server, ctx):
    server.routes["/wo"] = lambda r: ok({"results": RECORDS[:2], "next": "same"})
    src = source(
        ctx,
        url=server.url + "/wo",
        records_path="$.results",
        pagination={"type": "cursor", "cursor_path": "$.next"},
    )
    with pytest.raises(ConnectorError, match="cursor 'same' twice"):
        read(src)


def test_link_header_pagination(server, ctx):
    def answer(r):
        page = int(r.query.get("page", 1))
        links = [f'<{server.url}/wo?page=1>; rel="first"']
        if page < 3:  # relative and absolute links, other relations around rel=next
            target = f"/wo?page={page + 1}" if page == 1 else f"{server.url}/wo?page={page + 1}"
            links.append(f'<{target}>; title="more, here"; rel="next last"')
        return ok(RECORDS[(page - 1) * 100 : page * 100], Link=", ".join(links))

    server.routes["/wo"] = answer
    src = source(ctx, url=server.url + "/wo", params={"page": 1}, pagination={"type": "link_header"})
    assert ids(read(src)) == list(range(250))
    assert [r.query["page"] for r in server.requests("/wo")] == ["1", "2", "3"]


def test_next_url_pagination(server, ctx):
    def answer(r):
        page = int(r.query.get("page", 1))
        nxt = f"/wo?page={page + 1}" if page * 100 < len(RECORDS) else None
        return ok({"items": RECORDS[(page - 1) * 100 : page * 100], "links": {"next": nxt}})

    server.routes["/wo"] = answer
    src = source(
        ctx,
        url=server.url + "/wo",
        records_path="$.items",
        pagination={"type": "next_url", "next_url_path": "$.links.next"},
    )
    assert ids(read(src)) == list(range(250))
    assert len(server.requests("/wo")) == 3


def test_limit_stops_early_and_batches(server, ctx):
    server.routes["/wo"] = lambda r: ok(paged(r, size=10))
    src = source(ctx, url=server.url + "/wo", pagination={"type": "page", "size": 10, "size_param": "size"})
    frames = list(src.read(limit=35, batch_rows=20))
    assert [f.height for f in frames] == [20, 15]
    assert ids(pl.concat(frames)) == list(range(35))
    assert len(server.requests("/wo")) <= 4 + 3  # 4 pages needed; at most 4 in flight


def test_a_preview_asks_for_the_pages_it_needs(server, ctx):
    server.routes["/wo"] = lambda r: ok(paged(r, size=10))
    src = source(ctx, url=server.url + "/wo", pagination={"type": "page", "size": 10, "size_param": "size"})
    assert ids(read(src, limit=5)) == [0, 1, 2, 3, 4]
    assert len(server.requests("/wo")) == 1


# --- auth ----------------------------------------------------------------------------------------


def guarded(check):
    def route(r: Request):
        return ok(RECORDS[:2]) if check(r) else ok({"error": "unauthorized"}, 401)

    return route


def test_basic_auth(server, ctx):
    want = "Basic " + base64.b64encode(b"maint:s3cret-pw").decode()
    server.routes["/wo"] = guarded(lambda r: r.headers.get("authorization") == want)
    good = {"username": "maint", "password": "s3cret-pw"}
    assert read(source(ctx, url=server.url + "/wo", auth_method="basic", auth_params=good)).height == 2
    with pytest.raises(AuthError) as info:
        read(
            source(
                ctx, url=server.url + "/wo", auth_method="basic", auth_params={**good, "password": "wrong-pw"}
            )
        )
    line = str(info.value)
    assert line == f"cmms: GET {server.url}/wo: HTTP 401 Unauthorized (check auth_method and auth_params)"
    assert "wrong-pw" not in line


def test_bearer_token(server, ctx):
    server.routes["/wo"] = guarded(lambda r: r.headers.get("authorization") == "Bearer tkn-123")
    assert (
        read(
            source(ctx, url=server.url + "/wo", auth_method="bearer_token", auth_params={"token": "tkn-123"})
        ).height
        == 2
    )
    with pytest.raises(AuthError) as info:
        read(
            source(ctx, url=server.url + "/wo", auth_method="bearer_token", auth_params={"token": "tkn-BAD"})
        )
    assert "401" in str(info.value) and "tkn-BAD" not in str(info.value)
    assert len(server.requests("/wo")) == 2  # an auth failure is never retried


def test_api_key_header_and_query(server, ctx):
    server.routes["/h"] = guarded(lambda r: r.headers.get("x-api-key") == "k-1")
    server.routes["/q"] = guarded(lambda r: r.query.get("api_key") == "k-2" and r.query.get("site") == "n")
    h = source(
        ctx,
        url=server.url + "/h",
        auth_method="api_key",
        auth_params={"header": "X-API-Key", "api_key": "k-1"},
    )
    assert read(h).height == 2
    q = source(
        ctx,
        url=server.url + "/q",
        params={"site": "n"},
        auth_method="api_key",
        auth_params={"query_param": "api_key", "api_key": "k-2"},
    )
    assert read(q).height == 2
    bad = source(
        ctx,
        url=server.url + "/q",
        auth_method="api_key",
        auth_params={"query_param": "api_key", "api_key": "k-BAD"},
    )
    with pytest.raises(AuthError) as info:
        read(bad)
    assert "k-BAD" not in str(info.value) and "api_key" not in str(info.value).split("(")[0]


class OAuthServer:
    """A token endpoint (client credentials) and an API that takes only live tokens it issued."""

    def __init__(self, server: RestServer, expires_in: float):
        self.expires_in = expires_in
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.revoked: set[str] = set()
        self.issued = 0
        server.routes["/oauth/token"] = self.token
        server.routes["/api/wo"] = self.api

    def token(self, r: Request):
        form = r.form()
        if form.get("grant_type") != "client_credentials" or form.get("client_secret") != "cs-1":
            return ok({"error": "invalid_client"}, 401)
        if form.get("scope") != "read:wo read:assets":
            return ok({"error": "invalid_scope"}, 400)
        self.issued += 1
        value = f"tok-{self.issued}"
        self.tokens[value] = time.monotonic() + self.expires_in
        return ok({"access_token": value, "token_type": "Bearer", "expires_in": self.expires_in})

    def api(self, r: Request):
        value = r.headers.get("authorization", "").removeprefix("Bearer ")
        if value in self.revoked or time.monotonic() > self.tokens.get(value, 0):
            return ok({"error": "invalid_token"}, 401)
        return ok([{"id": 1, "token": value}])


def oauth_source(ctx, server, **auth):
    params = {
        "token_url": server.url + "/oauth/token",
        "client_id": "edge-1",
        "client_secret": "cs-1",
        "scopes": ["read:wo", "read:assets"],
        **auth,
    }
    return source(
        ctx, url=server.url, endpoint="/api/wo", auth_method="oauth2_client_credentials", auth_params=params
    )


def test_oauth2_token_is_cached(server, ctx):
    _TOKENS.clear()
    oauth = OAuthServer(server, expires_in=3600)
    for _ in range(3):
        assert read(oauth_source(ctx, server)).get_column("token").to_list() == ["tok-1"]
    assert oauth.issued == 1


def test_oauth2_token_refreshed_before_expiry(server, ctx):
    _TOKENS.clear()
    oauth = OAuthServer(server, expires_in=3)
    src = oauth_source(ctx, server, refresh_margin=2.5)  # so the token counts as stale after 0.5 s
    assert read(src).get_column("token").to_list() == ["tok-1"]
    first = next(iter(_TOKENS.values()))
    wait_for(
        lambda: time.monotonic() >= first.expires_at - 2.5, timeout=10, what="the token to be near expiry"
    )
    assert read(src).get_column("token").to_list() == ["tok-2"]  # a new one, before the server refuses tok-1
    assert oauth.issued == 2
    assert not [r for r in server.requests("/api/wo") if r.headers["authorization"] == "Bearer tok-1"][1:]


def test_oauth2_revoked_token_is_replaced_once(server, ctx):
    _TOKENS.clear()
    oauth = OAuthServer(server, expires_in=3600)
    assert read(oauth_source(ctx, server)).height == 1
    oauth.revoked.add("tok-1")
    assert read(oauth_source(ctx, server)).get_column("token").to_list() == ["tok-2"]


def test_oauth2_bad_client_secret(server, ctx):
    _TOKENS.clear()
    OAuthServer(server, expires_in=3600)
    with pytest.raises(AuthError) as info:
        read(oauth_source(ctx, server, client_secret="cs-WRONG"))
    line = str(info.value)
    assert line == (
        f"cmms: POST {server.url}/oauth/token: HTTP 401 Unauthorized "
        "(invalid_client: check token_url, client_id, client_secret, scopes)"
    )
    assert "cs-WRONG" not in line


def test_oauth2_bad_scope_is_an_auth_error(server, ctx):
    _TOKENS.clear()
    oauth = OAuthServer(server, expires_in=3600)
    with pytest.raises(AuthError, match=r"HTTP 400 Bad Request \(invalid_scope: check"):
        read(oauth_source(ctx, server, scopes="read:everything"))
    assert oauth.issued == 0 and len(server.requests("/oauth/token")) == 1  # not retried


# --- resilience ----------------------------------------------------------------------------------


def failing_then(n: int, status: int, headers: dict[str, str] | None = None):
    count = {"n": 0}
    lock = threading.Lock()

    def route(r: Request):
        with lock:
            count["n"] += 1
            if count["n"] <= n:
                return ok({"error": "busy"}, status, **(headers or {}))
        return ok(RECORDS[:3])

    return route


def test_429_honours_retry_after(server, ctx, logs):
    server.routes["/wo"] = failing_then(1, 429, {"Retry_After": "1"})
    assert read(source(ctx, url=server.url + "/wo")).height == 3
    first, second = server.requests("/wo")
    assert second.at - first.at >= 0.9  # Retry-After: 1, not the 0.01 s back-off
    assert any("retry 1/3 in 1 s" in msg and "HTTP 429" in msg for _, msg in logs)


def test_503_honours_retry_after_http_date(server, ctx):
    import email.utils

    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # whole seconds: waits 2-3 s
    server.routes["/wo"] = failing_then(1, 503, {"Retry_After": when})
    assert read(source(ctx, url=server.url + "/wo")).height == 3
    first, second = server.requests("/wo")
    assert second.at - first.at >= 0.5


def test_5xx_retried_then_gives_up_in_one_line(server, ctx):
    server.routes["/ok"] = failing_then(2, 500)
    assert read(source(ctx, url=server.url + "/ok", retry_attempts=3)).height == 3
    assert len(server.requests("/ok")) == 3
    server.routes["/bad"] = failing_then(99, 502)
    with pytest.raises(ConnectorError) as info:
        read(source(ctx, url=server.url + "/bad", retry_attempts=1))
    assert (
        str(info.value)
        == f'cmms: GET {server.url}/bad: HTTP 502 Bad Gateway: {{"error": "busy"}} (after 2 tries)'
    )
    assert len(server.requests("/bad")) == 2


def test_other_4xx_not_retried(server, ctx):
    server.routes["/wo"] = lambda r: ok({"error": "bad filter"}, 400)
    with pytest.raises(ConnectorError, match="HTTP 400 Bad Request"):
        read(source(ctx, url=server.url + "/wo"))
    assert len(server.requests("/wo")) == 1


def test_connection_refused_one_line(ctx):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectorError) as info:
        read(source(ctx, url=f"http://127.0.0.1:{port}/wo", retry_attempts=1))
    assert str(info.value) == f"cmms: GET http://127.0.0.1:{port}/wo: connection refused (after 2 tries)"


def test_timeout(server, ctx):
    release = threading.Event()

    def slow(r):
        release.wait(5)
        return ok([])

    server.routes["/slow"] = slow
    try:
        with pytest.raises(ConnectorError, match=r"no answer within 0\.3 s"):
            read(source(ctx, url=server.url + "/slow", connection_timeout=0.3, retry_attempts=0))
    finally:
        release.set()


def test_rate_limit(server, ctx):
    server.routes["/wo"] = lambda r: ok(paged(r, size=10))
    src = source(
        ctx,
        url=server.url + "/wo",
        pagination={"type": "page", "size_param": "size", "size": 10},
        rate_limit=5,
        rate_limit_period=0.5,
        concurrency=4,
        max_pages=12,
    )
    started = time.monotonic()
    assert read(src).height == 120
    elapsed = time.monotonic() - started
    assert len(server.requests("/wo")) == 12
    # 12 requests at 5 per 0.5 s: the 6th and the 11th wait for a window each, so the 11th starts
    # at least 1 s after the first. Measured on the client, where the limiter holds them: the
    # server's arrival times are a neighbour of that (on a loaded machine the first was logged
    # 0.26 s late, and the 6th then looked early).
    assert elapsed >= 1.0, elapsed


# --- config and validation ------------------------------------------------------------------------


def test_config_errors():
    with pytest.raises(ValidationError, match=r"needs auth_params\.token"):
        RestApiSourceConfig.model_validate({"url": "http://x", "auth_method": "bearer_token"})
    with pytest.raises(ValidationError, match=r"header or auth_params\.query_param"):
        RestApiSourceConfig.model_validate(
            {"url": "http://x", "auth_method": "api_key", "auth_params": {"api_key": "k"}}
        )
    with pytest.raises(ValidationError, match="recursive descent"):
        RestApiSourceConfig.model_validate({"url": "http://x", "records_path": "$..items"})
    with pytest.raises(ValidationError, match="must start with http"):
        RestApiSourceConfig.model_validate({"url": "ftp://x"})
    with pytest.raises(ValidationError):
        RestApiSourceConfig.model_validate({"url": "http://x", "pagination": {"type": "pages"}})


def test_secret_in_clear_warns(server, ctx, logs):
    masked = RestApiSourceConfig.model_validate(
        {"url": "http://x", "auth_method": "bearer_token", "auth_params": {"token": "<secret>"}}
    )
    assert masked.clear_secrets() == []
    server.routes["/wo"] = lambda r: ok([])
    src = source(
        ctx,
        url=server.url + "/wo",
        headers={"Authorization": "Bearer abc", "X-Plant": "p1"},
        auth_method="basic",
        auth_params={"username": "u", "password": "p"},
    )
    assert src.config.clear_secrets() == ["auth_params.password", "headers.Authorization"]
    read(src)
    warning = [m for level, m in logs if level == "warning" and "clear text" in m]
    assert warning and "auth_params.password, headers.Authorization" in warning[0]


def test_check(server, ctx):
    server.routes["/wo"] = lambda r: ok(paged(r))
    src = source(ctx, url=server.url + "/wo", pagination={"type": "page", "size": 100, "size_param": "size"})
    src.check()
    assert [r.query["page"] for r in server.requests("/wo")] == ["1"]  # one request
    server.routes["/wo"] = lambda r: ok({}, 403)
    with pytest.raises(AuthError, match=r"HTTP 403 Forbidden"):
        src.check()


# --- the destination ------------------------------------------------------------------------------


def sink(ctx, **config) -> RestApiSink:
    config.setdefault("retry_backoff", 0.01)
    return RestApiSink(RestApiSinkConfig.model_validate(config), ctx, "cmms_out")


def receiver(server: RestServer, path: str = "/in", fail_at: set[int] | None = None):
    got: list[Request] = []

    def route(r: Request):
        got.append(r)
        if fail_at and len(got) in fail_at:
            return ok({"error": "boom"}, 500)
        return ok({"accepted": True}, 201)

    server.routes[path] = route
    return got


def test_sink_sends_batches_at_commit(server, ctx):
    got = receiver(server)
    out = sink(
        ctx,
        url=server.url,
        endpoint="/in",
        batch_rows=1000,
        auth_method="bearer_token",
        auth_params={"token": "t"},
    )
    data = pl.DataFrame(
        {
            "id": range(2500),
            "at": pl.datetime_range(
                pl.datetime(2026, 1, 1), pl.datetime(2026, 1, 1, 0, 41, 39), "1s", eager=True
            ),
        }
    )
    out.open()
    out.write(data.slice(0, 1200))
    out.write(data.slice(1200))
    assert got == []  # nothing leaves before the commit
    out.close()
    assert [len(r.json()) for r in got] == [1000, 1000, 500]
    assert [row["id"] for r in got for row in r.json()] == list(range(2500))
    assert got[0].json()[1] == {"id": 1, "at": "2026-01-01T00:00:01.000000"}
    assert all(r.method == "POST" and r.headers["authorization"] == "Bearer t" for r in got)
    assert len({r.headers["idempotency-key"] for r in got}) == 3
    assert out.sent == 2500


def test_sink_put_wrapped_and_retried(server, ctx):
    got = receiver(server, fail_at={1})
    out = sink(ctx, url=server.url + "/in", method="PUT", wrap="records", batch_rows=10)
    out.open()
    out.write(pl.DataFrame({"v": [1.5, None, float("nan")]}))
    out.close()
    assert len(got) == 2 and got[0].body == got[1].body  # the same body again, same key
    assert got[1].headers["idempotency-key"] == got[0].headers["idempotency-key"]
    assert got[1].json() == {"records": [{"v": 1.5}, {"v": None}, {"v": None}]}


def test_sink_abort_sends_nothing(server, ctx, tmp_path):
    got = receiver(server)
    out = sink(ctx, url=server.url + "/in")
    out.open()
    spool = out.spool
    assert Path(spool).parent == ctx.data_dir and Path(spool).name.startswith(".rest-spool-")
    out.write(pl.DataFrame({"a": [1, 2]}))
    out.abort()
    assert got == [] and not __import__("os").path.exists(spool)


def test_sink_failure_mid_commit_says_what_was_sent(server, ctx):
    got = receiver(server, fail_at={2, 3})
    out = sink(ctx, url=server.url + "/in", batch_rows=2, retry_attempts=1)
    out.open()
    out.write(pl.DataFrame({"a": [1, 2, 3, 4, 5]}))
    with pytest.raises(ConnectorError) as info:
        out.close()
    line = str(info.value)
    assert line.startswith(f"cmms_out: POST {server.url}/in: HTTP 500")
    assert line.endswith("(2 of 5 records were delivered before this)")
    assert len(got) == 3  # the first batch, then the second one tried twice
    assert out.spool is None


def test_sink_auth_failure(server, ctx):
    server.routes["/in"] = lambda r: ok({}, 401)
    out = sink(
        ctx,
        url=server.url + "/in",
        auth_method="api_key",
        auth_params={"header": "X-Key", "api_key": "sekrit"},
    )
    out.open()
    out.write(pl.DataFrame({"a": [1]}))
    with pytest.raises(AuthError) as info:
        out.close()
    assert "HTTP 401" in str(info.value) and "sekrit" not in str(info.value)
    assert len(server.requests("/in")) == 1


def test_sink_check(server, ctx):
    server.routes["/in"] = lambda r: ok({}, 405)
    sink(ctx, url=server.url + "/in").check()  # any answer but 401/403 says the endpoint is there
    server.routes["/in"] = lambda r: ok({}, 401)
    with pytest.raises(AuthError):
        sink(ctx, url=server.url + "/in").check()


def test_json_body_records_as_given(server, ctx):
    body = [
        {"id": 1, "tags": ["a", "b"], "asset": {"site": "n", "line": 2}},
        {"id": 2, "tags": [], "asset": None},
    ]
    server.routes["/wo"] = lambda r: ok(body)
    frame = read(source(ctx, url=server.url + "/wo"))
    assert json.loads(frame.write_json()) == body


def test_records_that_cannot_share_a_column_are_one_line(server, ctx):
    server.routes["/wo"] = lambda r: ok([{"id": 1, "parts": [1, 2]}, {"id": 2, "parts": {"k": 1}}])
    with pytest.raises(DataError) as info:
        read(source(ctx, url=server.url + "/wo"))
    line = str(info.value)
    assert line.startswith(f"cmms, page 1 ({server.url}/wo): the records do not fit one table:")
    assert "\n" not in line


def test_types_widen_across_pages(server, ctx):
    pages = {"1": [{"id": 1, "v": 1, "note": None}], "2": [{"id": 2, "v": 2.5, "note": "x"}], "3": []}
    server.routes["/wo"] = lambda r: ok(pages[r.query["page"]])
    frame = read(source(ctx, url=server.url + "/wo", pagination={"type": "page"}, concurrency=1))
    assert frame.to_dicts() == [{"id": 1, "v": 1.0, "note": None}, {"id": 2, "v": 2.5, "note": "x"}]


def test_cancel_stops_between_pages(server, ctx):
    def answer(r):
        ctx.cancel.set()  # the user cancels while the first page is on its way
        return ok(paged(r, size=10))

    server.routes["/wo"] = answer
    src = source(ctx, url=server.url + "/wo", pagination={"type": "page", "size": 10, "size_param": "size"})
    with pytest.raises(RunCancelled):
        read(src)


def test_a_failed_page_stops_the_others_waits(server, ctx):
    second_waiting = threading.Event()

    def answer(r):
        if r.query["page"] == "1":
            second_waiting.wait(10)  # fail only once page 2 is waiting out its Retry-After
            return ok({"error": "bad filter"}, 400)
        second_waiting.set()
        return ok({"error": "busy"}, 503, Retry_After="60")

    server.routes["/wo"] = answer
    src = source(ctx, url=server.url + "/wo", pagination={"type": "page", "size": 10}, concurrency=2)
    started = time.monotonic()
    with pytest.raises(ConnectorError, match="HTTP 400"):
        read(src)
    assert time.monotonic() - started < 20  # not the 60 s page 2 was told to wait
