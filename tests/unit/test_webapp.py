"""lbcluster.webapp: the backend web app, through aiohttp's test server (no real port)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lbcluster import webapp
from lbcluster.webapp import (
    COOKIE,
    MAX_DELAY_MS,
    STATE,
    AppState,
    DelayError,
    SessionStore,
    make_app,
    parse_delay,
)


def run(test: Callable[[TestClient, web.Application], Awaitable[None]]) -> None:
    """Run ``test(client, app)`` against a fresh app on the test server."""

    async def main() -> None:
        app = make_app("blue", "s1-host")
        async with TestClient(TestServer(app)) as client:
            await test(client, app)

    asyncio.run(main())


def state_of(app: web.Application) -> AppState:
    state: AppState = app[STATE]  # type: ignore[index]
    return state


# --- GET / ------------------------------------------------------------------


def test_get_index_body_headers_and_cookie() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.get("/")
        assert resp.status == 200
        assert resp.content_type == "application/json"
        raw = await resp.text()
        body = json.loads(raw)
        assert list(body) == ["hello", "ip", "host", "tag", "sessionViews", "id"]
        assert body["hello"] == "world!"
        assert body["ip"] == "127.0.0.1"
        assert (body["host"], body["tag"]) == ("s1-host", "blue")
        assert body["sessionViews"] == 1
        assert resp.headers["x-backend-ip"] == "127.0.0.1"
        cookie = resp.cookies[COOKIE]
        assert cookie.value == body["id"]
        assert cookie["httponly"]
        assert cookie["path"] == "/"
        assert len(body["id"]) >= 20

    run(test)


def test_session_views_increment_with_the_cookie() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        first = await (await client.get("/")).json()
        second = await (await client.get("/")).json()  # the client's jar sends the cookie
        third = await (await client.get("/")).json()
        assert (first["sessionViews"], second["sessionViews"], third["sessionViews"]) == (1, 2, 3)
        assert first["id"] == second["id"] == third["id"]
        assert len(state_of(app).sessions) == 1

        client.session.cookie_jar.clear()
        fresh = await (await client.get("/")).json()
        assert fresh["sessionViews"] == 1
        assert fresh["id"] != first["id"]
        again = await (await client.get("/", cookies={COOKIE: first["id"]})).json()
        client.session.cookie_jar.clear()
        assert again == {**first, "sessionViews": 4}

    run(test)


def test_unknown_cookie_starts_a_new_session() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.get("/", cookies={COOKIE: "forged-session-id"})
        body = await resp.json()
        assert body["sessionViews"] == 1
        assert body["id"] != "forged-session-id"
        assert resp.cookies[COOKIE].value == body["id"]

    run(test)


# --- HEAD / -----------------------------------------------------------------


def test_head_is_healthy_then_503_when_draining() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.head("/")
        assert resp.status == 200
        assert resp.headers["x-backend-ip"] == "127.0.0.1"
        assert COOKIE not in resp.cookies
        assert len(state_of(app).sessions) == 0  # health checks make no sessions

        state_of(app).draining = True
        resp = await client.head("/")
        assert resp.status == 503
        # While draining, real requests are still served.
        resp = await client.get("/")
        assert resp.status == 200

    run(test)


# --- POST /delay ------------------------------------------------------------


def test_post_delay_sets_delay() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.post("/delay", json={"delay": 25})
        assert resp.status == 200
        assert await resp.json() == {"message": "New timeout of 25ms configured."}
        assert state_of(app).delay_ms == 25

        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await client.get("/")).status == 200
        assert loop.time() - started >= 0.02

        resp = await client.post("/delay", json={"delay": 0})
        assert resp.status == 200
        assert state_of(app).delay_ms == 0

    run(test)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", 'expected a JSON object like {"delay": 100}'),
        (b"not json", "body is not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"timeout": 5}', "expected a JSON object"),
        (b'{"delay": "100"}', 'delay must be a number of milliseconds, got "100"'),
        (b'{"delay": true}', "delay must be a number of milliseconds, got true"),
        (b'{"delay": null}', "delay must be a number of milliseconds, got null"),
        (b'{"delay": -1}', "delay must be between 0 and 60000 ms, got -1"),
        (b'{"delay": 60001}', "delay must be between 0 and 60000 ms, got 60001"),
        (b'{"delay": NaN}', "delay must be between 0 and 60000 ms, got nan"),
        (b'{"delay": Infinity}', "delay must be between 0 and 60000 ms"),
        (b"\xff\xfe", "body is not valid JSON"),
    ],
)
def test_post_delay_invalid_bodies(body: bytes, message: str) -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        state_of(app).delay_ms = 7
        resp = await client.post("/delay", data=body)
        assert resp.status == 400
        payload = await resp.json()
        assert message in payload["error"]
        assert state_of(app).delay_ms == 7  # unchanged

    run(test)


def test_post_delay_deeply_nested_body_is_a_400() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.post("/delay", data=b"[" * 5000)
        assert resp.status == 400

    run(test)


def test_post_delay_too_large_body_refused() -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.post("/delay", data=b"{" + b" " * 100_000 + b"}")
        assert resp.status == 413
        assert state_of(app).delay_ms == 0

    run(test)


# --- anything else ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/missing"),
        ("GET", "/delay"),
        ("POST", "/"),
        ("DELETE", "/"),
        ("PUT", "/delay"),
        ("GET", "/a/b/c?x=1"),
    ],
)
def test_other_paths_404(method: str, path: str) -> None:
    async def test(client: TestClient, app: web.Application) -> None:
        resp = await client.request(method, path)
        assert resp.status == 404
        body = await resp.json()
        assert body == {"error": f"not found: {method} {path.split('?', maxsplit=1)[0]}"}
        assert len(state_of(app).sessions) == 0

    run(test)


# --- SessionStore -----------------------------------------------------------


def test_session_store_counts_and_creates() -> None:
    store = SessionStore()
    sid, views = store.touch(None)
    assert views == 1
    assert store.touch(sid) == (sid, 2)
    other, views = store.touch("unknown")
    assert other not in (sid, "unknown")
    assert views == 1
    assert len(store) == 2


def test_session_store_lru_limit() -> None:
    store = SessionStore(limit=3)
    a, _ = store.touch(None)
    b, _ = store.touch(None)
    c, _ = store.touch(None)
    store.touch(a)  # a is now the most recent; b is the least recent
    d, _ = store.touch(None)
    assert len(store) == 3
    assert store.touch(a) == (a, 3)
    assert store.touch(c) == (c, 2)
    assert store.touch(d) == (d, 2)
    new_b, views = store.touch(b)  # evicted: a fresh session
    assert new_b != b
    assert views == 1
    assert len(store) == 3


def test_session_store_default_limit() -> None:
    store = SessionStore()
    for _ in range(webapp.MAX_SESSIONS + 5):
        store.touch(None)
    assert len(store) == webapp.MAX_SESSIONS


# --- parse_delay ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"delay": 0}', 0),
        (b'{"delay": 100}', 100),
        (b'{"delay": 60000}', MAX_DELAY_MS),
        (b'{"delay": 1.9}', 1),
        (b'{"delay": 5, "other": 1}', 5),
    ],
)
def test_parse_delay_valid(body: bytes, expected: int) -> None:
    assert parse_delay(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"{",
        b"5",
        b'"x"',
        b"{}",
        b'{"delay": [1]}',
        b'{"delay": false}',
        b'{"delay": 1e9}',
    ],
)
def test_parse_delay_invalid(body: bytes) -> None:
    with pytest.raises(DelayError):
        parse_delay(body)


def test_parse_delay_message_shows_value() -> None:
    with pytest.raises(DelayError) as exc:
        parse_delay(b'{"delay": {"a": 1}}')
    assert str(exc.value) == 'delay must be a number of milliseconds, got {"a": 1}'


# --- main -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _keep_logging() -> Any:
    """main() reconfigures the root logger: put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def test_main_bad_port_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBAPP_PORT", "http")
    called: list[Any] = []
    monkeypatch.setattr(webapp.asyncio, "run", lambda *a: called.append(a))
    assert webapp.main() == 2
    assert called == []
    assert "bad WEBAPP_PORT or WEBAPP_DRAIN_SECONDS" in capsys.readouterr().err


def test_main_tag_defaults_to_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_serve(app: web.Application, port: int, drain: float, access: bool) -> None:
        seen.update(
            tag=state_of(app).tag, host=state_of(app).host, port=port, drain=drain, access=access
        )

    monkeypatch.delenv("TAG", raising=False)
    monkeypatch.setenv("WEBAPP_PORT", "3111")
    monkeypatch.setenv("WEBAPP_DRAIN_SECONDS", "0.5")
    monkeypatch.setattr(webapp.socket, "gethostname", lambda: "box")
    monkeypatch.setattr(webapp, "serve", fake_serve)
    assert webapp.main() == 0
    assert seen == {"tag": "box", "host": "box", "port": 3111, "drain": 0.5, "access": False}
    monkeypatch.setenv("TAG", "green")
    monkeypatch.setenv("WEBAPP_ACCESS_LOG", "on")
    assert webapp.main() == 0
    assert (seen["tag"], seen["access"]) == ("green", True)


def test_main_bad_access_log_setting_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBAPP_ACCESS_LOG", "yes please")
    monkeypatch.setattr(webapp.asyncio, "run", lambda *a: pytest.fail("must not start"))
    assert webapp.main() == 2
    assert "WEBAPP_ACCESS_LOG='yes please': expected on or off" in capsys.readouterr().err
