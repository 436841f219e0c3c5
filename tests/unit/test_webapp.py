"""lbcluster.webapp: the backend web app, served for real on 127.0.0.1 (port 0).

Each test starts the server in a thread (the loop the container runs, without
its signal handling) and talks to it over raw sockets; the signal path and the
exit codes run ``python -m lbcluster.webapp`` in a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbcluster import webapp
from lbcluster.httpd import Limits, Request, Server
from lbcluster.webapp import (
    COOKIE,
    MAX_DELAY_MS,
    App,
    DelayError,
    SessionStore,
    SettingError,
    cookie_value,
    json_object,
    json_string,
    make_server,
    new_session_id,
    parse_delay,
    read_settings,
)

SRC = Path(webapp.__file__).resolve().parents[1]
TIMEOUT = 5.0


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def session(self) -> str:
        match = re.fullmatch(rf"{COOKIE}=([^;]+); HttpOnly; Path=/", self.headers["set-cookie"])
        assert match, self.headers["set-cookie"]
        return match.group(1)


class Client:
    """One connection to the server, speaking raw HTTP/1.1."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        version: str = "HTTP/1.1",
    ) -> Reply:
        self.send(encode(method, path, body, headers, version))
        return self.reply(head=method == "HEAD")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; unparsed: {self.buf!r}")
        self.buf += data

    def reply(self, head: bool = False) -> Reply:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines:
            name, value = line.split(": ", 1)
            assert name.lower() not in headers, f"repeated {name}"
            headers[name.lower()] = value
        if int(status) == 100:
            return Reply(100, headers, b"")
        assert "date" in headers
        length = int(headers["content-length"])  # every response has one
        if head:
            return Reply(int(status), headers, b"")
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(int(status), headers, body)

    def closed_by_server(self) -> bool:
        """True if the server closes this connection (EOF, no more bytes) in time."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def encode(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    head = f"{method} {path} {version}\r\nHost: test\r\n"
    headers = dict(headers or {})
    if body and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


class Served:
    def __init__(self, app: App, server: Server, thread: threading.Thread) -> None:
        self.app = app
        self.server = server
        self.thread = thread
        self.port = server.port
        self.clients: list[Client] = []

    def client(self) -> Client:
        client = Client(self.port)
        self.clients.append(client)
        return client

    def request(self, method: str, path: str, body: bytes = b"", **kwargs: Any) -> Reply:
        """One request on a new connection."""
        return self.client().request(method, path, body, **kwargs)


Start = Callable[..., Served]


@pytest.fixture
def start() -> Iterator[Start]:
    started: list[Served] = []

    def start(drain: float = 0.0, access_log: bool = False, **limits: Any) -> Served:
        app = App("blue", "s1-host")
        server = make_server(app, ("127.0.0.1", 0), drain, access_log, Limits(**limits))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        served = Served(app, server, thread)
        started.append(served)
        return served

    yield start
    for served in started:
        for client in served.clients:
            client.close()
        served.server.stop()
        served.thread.join(TIMEOUT)
        assert not served.thread.is_alive(), "the server did not stop"


@pytest.fixture
def served(start: Start) -> Served:
    return start()


# --- GET / ------------------------------------------------------------------


def test_get_index_body_headers_and_cookie(served: Served) -> None:
    resp = served.request("GET", "/")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert list(body) == ["hello", "ip", "host", "tag", "sessionViews", "id"]
    assert body["hello"] == "world!"
    assert body["ip"] == "127.0.0.1"
    assert (body["host"], body["tag"]) == ("s1-host", "blue")
    assert body["sessionViews"] == 1
    assert resp.headers["x-backend-ip"] == "127.0.0.1"
    assert resp.session == body["id"]
    assert len(body["id"]) == 24
    assert "connection" not in resp.headers  # kept alive


def test_session_views_increment_with_the_cookie(served: Served) -> None:
    client = served.client()
    first = client.request("GET", "/").json()
    cookie = {"Cookie": f"{COOKIE}={first['id']}"}
    second = client.request("GET", "/", headers=cookie).json()
    third = client.request("GET", "/", headers=cookie).json()
    assert (first["sessionViews"], second["sessionViews"], third["sessionViews"]) == (1, 2, 3)
    assert first["id"] == second["id"] == third["id"]
    assert len(served.app.sessions) == 1

    fresh = served.request("GET", "/").json()
    assert fresh["sessionViews"] == 1
    assert fresh["id"] != first["id"]
    again = served.request("GET", "/", headers=cookie).json()
    assert again == {**first, "sessionViews": 4}


def test_unknown_cookie_starts_a_new_session(served: Served) -> None:
    resp = served.request("GET", "/", headers={"Cookie": f"{COOKIE}=forged-session-id"})
    body = resp.json()
    assert body["sessionViews"] == 1
    assert body["id"] != "forged-session-id"
    assert resp.session == body["id"]


def test_cookie_among_others_with_whitespace(served: Served) -> None:
    sid = served.request("GET", "/").json()["id"]
    for header in (
        f"a=1; {COOKIE}={sid}; b=2",
        f"  a=1 ;{COOKIE} = {sid} ;",
        f'{COOKIE}="{sid}"',
    ):
        assert served.request("GET", "/", headers={"Cookie": header}).json()["id"] == sid
    # Two Cookie header lines count as one list.
    client = served.client()
    client.send(f"GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: {COOKIE}={sid}\r\n\r\n".encode())
    assert client.reply().json()["id"] == sid
    assert len(served.app.sessions) == 1
    assert served.app.sessions.touch(sid) == (sid, 6)


# --- HEAD / -----------------------------------------------------------------


def test_head_is_healthy_then_503_when_draining(served: Served) -> None:
    resp = served.request("HEAD", "/")
    assert resp.status == 200
    assert resp.headers["x-backend-ip"] == "127.0.0.1"
    assert resp.headers["content-length"] == "0"
    assert "set-cookie" not in resp.headers
    assert len(served.app.sessions) == 0  # health checks make no sessions

    served.app.draining = True
    assert served.request("HEAD", "/").status == 503
    # While draining, real requests are still served.
    assert served.request("GET", "/").status == 200


def test_head_of_other_paths_has_no_body(served: Served) -> None:
    client = served.client()
    resp = client.request("HEAD", "/missing")
    assert resp.status == 404
    assert int(resp.headers["content-length"]) > 0
    assert client.request("GET", "/").status == 200  # nothing left over on the connection


# --- POST /delay ------------------------------------------------------------


def test_post_delay_sets_delay(served: Served) -> None:
    resp = served.request("POST", "/delay", json.dumps({"delay": 25}).encode())
    assert resp.status == 200
    assert resp.json() == {"message": "New timeout of 25ms configured."}
    assert served.app.delay_ms == 25

    started = time.monotonic()
    assert served.request("GET", "/").status == 200
    assert time.monotonic() - started >= 0.025

    resp = served.request("POST", "/delay", b'{"delay": 0}')
    assert resp.status == 200
    assert served.app.delay_ms == 0


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
def test_post_delay_invalid_bodies(served: Served, body: bytes, message: str) -> None:
    served.app.delay_ms = 7
    resp = served.request("POST", "/delay", body)
    assert resp.status == 400
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    assert message in resp.json()["error"]
    assert served.app.delay_ms == 7  # unchanged


def test_post_delay_deeply_nested_body_is_a_400(served: Served) -> None:
    assert served.request("POST", "/delay", b"[" * 5000).status == 400


def test_post_delay_chunked(served: Served) -> None:
    client = served.client()
    client.send(
        b"POST /delay HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"de\r\n'
        b'9\r\nlay": 42}\r\n'
        b"0\r\nX-Trailer: yes\r\n\r\n"
    )
    resp = client.reply()
    assert (resp.status, resp.json()) == (200, {"message": "New timeout of 42ms configured."})
    assert served.app.delay_ms == 42


def test_post_delay_too_large_body_refused(served: Served) -> None:
    client = served.client()
    resp = client.request("POST", "/delay", b"{" + b" " * 100_000 + b"}")
    assert resp.status == 413
    assert resp.json() == {"error": "request body larger than 65536 bytes"}
    assert resp.headers["connection"] == "close"
    assert client.closed_by_server()
    assert served.app.delay_ms == 0


def test_refused_body_is_read_and_dropped_until_the_client_closes(served: Served) -> None:
    """The server shuts its side and reads on: a client still sending gets no reset."""
    client = served.client()
    client.send(b"POST /delay HTTP/1.1\r\nContent-Length: 200000\r\n\r\n")
    assert client.reply().status == 413
    for _ in range(4):
        time.sleep(0.01)
        client.send(b" " * 20_000)  # a reset would fail these
    client.sock.shutdown(socket.SHUT_WR)
    assert client.closed_by_server()


def test_too_large_chunked_body_refused(served: Served) -> None:
    client = served.client()
    chunk = b"8000\r\n" + b" " * 0x8000 + b"\r\n"
    client.send(b"POST /delay HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    assert client.reply().status == 413
    assert client.closed_by_server()


def test_expect_100_continue(served: Served) -> None:
    client = served.client()
    client.send(b"POST /delay HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 13\r\n\r\n")
    assert client.reply().status == 100
    client.send(b'{"delay": 13}')
    assert client.reply().json() == {"message": "New timeout of 13ms configured."}


# --- anything else ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/missing"), ("GET", "/a/b/c?x=1"), ("POST", "/x"), ("GET", "/delay/")],
)
def test_other_paths_404(served: Served, method: str, path: str) -> None:
    resp = served.request(method, path)
    assert resp.status == 404
    assert resp.json() == {"error": f"not found: {method} {path.split('?', maxsplit=1)[0]}"}
    assert len(served.app.sessions) == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/", "GET, HEAD"),
        ("PUT", "/?x", "GET, HEAD"),
        ("GET", "/delay", "POST"),
        ("PUT", "/delay", "POST"),
    ],
)
def test_other_methods_405(served: Served, method: str, path: str, allow: str) -> None:
    resp = served.request(method, path)
    assert resp.status == 405
    assert resp.headers["allow"] == allow
    assert resp.json() == {"error": f"method not allowed: {method} {path.partition('?')[0]}"}
    assert len(served.app.sessions) == 0


# --- HTTP/1.1 on the wire ---------------------------------------------------


def test_keep_alive_several_requests_on_one_connection(served: Served) -> None:
    client = served.client()
    replies = [client.request("GET", "/") for _ in range(3)]
    replies.append(client.request("HEAD", "/"))
    replies.append(client.request("POST", "/delay", b'{"delay": 0}'))
    replies.append(client.request("GET", "/nothing"))
    assert [r.status for r in replies] == [200, 200, 200, 200, 200, 404]
    assert all("connection" not in r.headers for r in replies)
    assert len(served.app.sessions) == 3  # no cookie sent: three sessions
    client.sock.settimeout(0.1)
    assert not client.closed_by_server()  # still open


def test_pipelined_requests_answered_in_order(served: Served) -> None:
    served.app.delay_ms = 100  # the first one is slow: the others still wait for it
    client = served.client()
    client.send(
        encode("GET", "/")
        + encode("GET", "/missing")
        + encode("POST", "/delay", b'{"delay": 0}')
        + encode("HEAD", "/")
        + encode("GET", "/")
    )
    first = client.reply()
    assert (first.status, first.json()["sessionViews"]) == (200, 1)
    assert client.reply().json() == {"error": "not found: GET /missing"}
    assert client.reply().json() == {"message": "New timeout of 0ms configured."}
    assert client.reply(head=True).status == 200
    last = client.reply()
    assert last.status == 200
    assert last.json()["id"] != first.json()["id"]


def test_a_request_sent_while_one_is_delayed_waits_for_it(served: Served) -> None:
    served.app.delay_ms = 150
    client = served.client()
    client.send(encode("GET", "/"))
    time.sleep(0.05)  # the GET is waiting on its timer now
    client.send(encode("GET", "/missing"))
    assert client.reply().status == 200
    assert client.reply().status == 404


def test_a_delayed_get_holds_no_other_connection_up(served: Served) -> None:
    served.app.delay_ms = 400
    slow = served.client()
    started = time.monotonic()
    slow.send(encode("GET", "/"))
    other = served.client()
    other.send(encode("GET", "/"))  # delayed too, but not after the first one
    assert served.request("HEAD", "/").status == 200
    assert served.request("GET", "/missing").status == 404
    assert time.monotonic() - started < 0.3  # answered while both GETs wait
    assert slow.reply().status == 200
    assert other.reply().status == 200
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 0.75  # side by side, not one after the other


def test_http10_closes_unless_keep_alive(served: Served) -> None:
    client = served.client()
    resp = client.request("GET", "/", version="HTTP/1.0")
    assert (resp.status, resp.headers["connection"]) == (200, "close")
    assert client.closed_by_server()

    client = served.client()
    resp = client.request("GET", "/", headers={"Connection": "keep-alive"}, version="HTTP/1.0")
    assert resp.headers["connection"] == "keep-alive"
    assert client.request("HEAD", "/", version="HTTP/1.0").status == 200
    assert client.closed_by_server()


def test_connection_close_is_honoured(served: Served) -> None:
    client = served.client()
    # A request pipelined after the one that closes is not answered.
    client.send(encode("GET", "/", headers={"Connection": "close"}) + encode("GET", "/"))
    resp = client.reply()
    assert (resp.status, resp.headers["connection"]) == (200, "close")
    assert client.closed_by_server()
    assert client.buf == b""
    assert len(served.app.sessions) == 1


def test_client_half_close_still_gets_its_answers(served: Served) -> None:
    client = served.client()
    client.send(encode("GET", "/") + encode("HEAD", "/"))
    client.sock.shutdown(socket.SHUT_WR)
    assert client.reply().status == 200
    assert client.reply(head=True).status == 200
    assert client.closed_by_server()


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported"),
        (
            b"POST /delay HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            400,
            "both Content-Length and Transfer-Encoding",
        ),
        (
            b"POST /delay HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "unsupported transfer coding: gzip",
        ),
    ],
)
def test_bad_requests_answered_then_closed(
    served: Served, data: bytes, status: int, error: str
) -> None:
    client = served.client()
    client.send(data)
    resp = client.reply()
    assert resp.status == status
    assert resp.json() == {"error": error}
    assert resp.headers["connection"] == "close"
    assert client.closed_by_server()


def test_bad_request_after_good_ones_on_the_same_connection(served: Served) -> None:
    client = served.client()
    client.send(encode("HEAD", "/") + b"NONSENSE\r\n\r\n")
    assert client.reply(head=True).status == 200
    assert client.reply().status == 400
    assert client.closed_by_server()


def test_too_large_head_431(served: Served) -> None:
    client = served.client()
    client.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    resp = client.reply()
    assert resp.status == 431
    assert resp.json() == {"error": "request head larger than 16384 bytes"}
    assert client.closed_by_server()


def test_idle_connections_time_out(start: Start) -> None:
    served = start(idle_timeout=0.2)
    client = served.client()
    assert client.request("GET", "/").status == 200
    started = time.monotonic()
    assert client.closed_by_server()
    assert 0.2 <= time.monotonic() - started < 2


def test_connection_cap(start: Start) -> None:
    served = start(max_connections=2)
    first, second = served.client(), served.client()
    assert first.request("HEAD", "/").status == 200
    assert second.request("HEAD", "/").status == 200
    third = served.client()  # queued in the kernel's backlog, not accepted
    third.send(encode("HEAD", "/"))
    third.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        third.sock.recv(1)
    third.sock.settimeout(TIMEOUT)
    first.close()
    assert third.reply(head=True).status == 200
    assert second.request("HEAD", "/").status == 200


def test_a_broken_handler_is_a_500_and_the_server_goes_on(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(request: Request) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(served.app, "index", broken)
    client = served.client()
    resp = client.request("GET", "/")
    assert (resp.status, resp.json()) == (500, {"error": "internal server error"})
    assert client.request("HEAD", "/").status == 200
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_access_log(start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    served = start(access_log=True)
    served.request("GET", "/", headers={"User-Agent": "probe/1"})
    served.request("HEAD", "/missing", version="HTTP/1.0")
    served.client().send(b"JUNK\r\n\r\n")
    served.clients[-1].reply()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r'127\.0\.0\.1 "GET / HTTP/1\.1" 200 \d+ 0\.\d{6}s "probe/1"', lines[0])
    assert re.fullmatch(r'127\.0\.0\.1 "HEAD /missing HTTP/1\.0" 404 \d+ 0\.\d{6}s "-"', lines[1])
    assert re.fullmatch(r'127\.0\.0\.1 "-" 400 \d+ 0\.000000s "-"', lines[2])


def test_no_access_log_by_default(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    served.request("GET", "/")
    assert capsys.readouterr().out == ""


# --- draining ---------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_drain_then_stop(start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    served = start(drain=0.4)
    kept = served.client()
    assert kept.request("GET", "/").status == 200
    served.server.stop()
    stopped_at = time.monotonic()
    wait_for(lambda: served.request("HEAD", "/").status == 503)
    assert kept.request("GET", "/").status == 200  # still served, old connection
    assert served.request("GET", "/").status == 200  # and new ones
    served.server.stop()  # a second signal changes nothing
    assert kept.request("HEAD", "/").status == 503
    served.thread.join(TIMEOUT)
    assert 0.4 <= time.monotonic() - stopped_at < 2
    assert kept.closed_by_server()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT)
    assert capsys.readouterr().out.splitlines() == [
        "stopping: failing health checks, still serving for 0.4 s"
    ]


def run_webapp(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lbcluster.webapp"],
        env={**os.environ, "PYTHONPATH": str(SRC), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_drains_then_exits_0() -> None:
    proc = run_webapp(
        {"WEBAPP_PORT": "0", "WEBAPP_DRAIN_SECONDS": "0.3", "WEBAPP_ACCESS_LOG": "on", "TAG": "t"}
    )
    try:
        assert proc.stdout is not None
        match = re.fullmatch(r"listening on :(\d+)\n", proc.stdout.readline())
        assert match
        port = int(match.group(1))
        client = Client(port)
        assert client.request("GET", "/").json()["tag"] == "t"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().startswith('127.0.0.1 "GET / HTTP/1.1" 200 ')
        stopping = proc.stdout.readline()
        assert stopping == "stopping: failing health checks, still serving for 0.3 s\n"
        assert client.request("HEAD", "/").status == 503
        assert client.request("GET", "/").status == 200
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert out.splitlines()[-1] == "stopped"
    assert err == ""


def test_sigint_stops_too() -> None:
    proc = run_webapp({"WEBAPP_PORT": "0", "WEBAPP_DRAIN_SECONDS": "0"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on :")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert (proc.returncode, out, err) == (
        0,
        "stopping: failing health checks, still serving for 0.0 s\nstopped\n",
        "",
    )


def test_port_in_use_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_webapp({"WEBAPP_PORT": str(port)})
        out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1
    assert out == ""
    assert err.startswith(f"lbcluster-webapp: cannot serve on :{port}: [Errno 98]")


# --- settings and main ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEBAPP_PORT", "http", "WEBAPP_PORT='http': expected a port number (0-65535)"),
        ("WEBAPP_PORT", "65536", "WEBAPP_PORT='65536': expected a port number (0-65535)"),
        ("WEBAPP_PORT", "-1", "WEBAPP_PORT='-1': expected a port number (0-65535)"),
        ("WEBAPP_PORT", "", "WEBAPP_PORT='': expected a port number (0-65535)"),
        ("WEBAPP_DRAIN_SECONDS", "soon", "WEBAPP_DRAIN_SECONDS='soon': expected a number"),
        ("WEBAPP_DRAIN_SECONDS", "-1", "WEBAPP_DRAIN_SECONDS='-1': expected a number"),
        ("WEBAPP_DRAIN_SECONDS", "nan", "WEBAPP_DRAIN_SECONDS='nan': expected a number"),
        ("WEBAPP_DRAIN_SECONDS", "inf", "WEBAPP_DRAIN_SECONDS='inf': expected a number"),
        ("WEBAPP_ACCESS_LOG", "yes please", "WEBAPP_ACCESS_LOG='yes please': expected on or off"),
        ("WEBAPP_ACCESS_LOG", "ON", "WEBAPP_ACCESS_LOG='ON': expected on or off"),
    ],
)
def test_bad_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(webapp, "serve", lambda *a: pytest.fail("must not start"))
    assert webapp.main() == 2
    assert capsys.readouterr().err.startswith(f"lbcluster-webapp: {message}")


def test_bad_setting_exit_code_of_the_program() -> None:
    proc = run_webapp({"WEBAPP_DRAIN_SECONDS": "later"})
    out, err = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, out) == (2, "")
    assert "WEBAPP_DRAIN_SECONDS='later'" in err


def test_settings_defaults_and_values() -> None:
    assert read_settings({}) == (3000, 3.0, False)
    env = {"WEBAPP_PORT": "8080", "WEBAPP_DRAIN_SECONDS": "0.5", "WEBAPP_ACCESS_LOG": "on"}
    assert read_settings(env) == (8080, 0.5, True)
    assert read_settings({"WEBAPP_PORT": "0", "WEBAPP_DRAIN_SECONDS": "0"})[:2] == (0, 0.0)
    with pytest.raises(SettingError):
        read_settings({"WEBAPP_PORT": "3000.0"})


def test_main_tag_defaults_to_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(app: App, port: int, drain: float, access: bool, ready: int | None) -> None:
        seen.update(tag=app.tag, host=app.host, port=port, drain=drain, access=access, ready=ready)

    for name in (
        "TAG",
        "WEBAPP_PORT",
        "WEBAPP_DRAIN_SECONDS",
        "WEBAPP_ACCESS_LOG",
        "WEBAPP_NOTIFY_FD",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEBAPP_PORT", "3111")
    monkeypatch.setenv("WEBAPP_DRAIN_SECONDS", "0.5")
    monkeypatch.setattr(webapp.socket, "gethostname", lambda: "box")
    monkeypatch.setattr(webapp, "serve", fake_serve)
    assert webapp.main() == 0
    assert seen == {
        "tag": "box",
        "host": "box",
        "port": 3111,
        "drain": 0.5,
        "access": False,
        "ready": None,
    }
    monkeypatch.setenv("TAG", "green")
    monkeypatch.setenv("WEBAPP_ACCESS_LOG", "on")
    monkeypatch.setenv("WEBAPP_NOTIFY_FD", "3")
    assert webapp.main() == 0
    assert (seen["tag"], seen["access"], seen["ready"]) == ("green", True, 3)


@pytest.mark.parametrize("value", ["1", "-3", "three", "3.0"])
def test_a_wrong_notify_fd_is_refused_by_name(
    value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBAPP_NOTIFY_FD", value)
    monkeypatch.setattr(webapp, "serve", lambda *args: pytest.fail("served"))
    assert webapp.main() == 2
    assert f"WEBAPP_NOTIFY_FD={value!r}: expected a file descriptor" in capsys.readouterr().err


def test_the_app_says_it_is_ready_on_its_notify_fd_once_it_listens() -> None:
    # As s6 reads readiness: a line on the notification fd, which then closes.
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lbcluster.webapp"],
        env={
            **os.environ,
            "PYTHONPATH": str(SRC),
            "WEBAPP_PORT": "0",
            "WEBAPP_NOTIFY_FD": str(write_end),
        },
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as ready:
            assert ready.read() == b"\n"  # then EOF: the app closed its end
        assert proc.stdout is not None
        match = re.fullmatch(r"listening on :(\d+)\n", proc.stdout.readline())
        assert match
        client = Client(int(match.group(1)))
        assert client.request("HEAD", "/").status == 200
        client.sock.close()
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)


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


def test_session_ids_are_url_safe_base64_of_18_random_bytes() -> None:
    ids = {new_session_id() for _ in range(200)}
    assert len(ids) == 200
    for sid in ids:
        assert len(sid) == 24
        assert re.fullmatch(r"[A-Za-z0-9_-]{24}", sid)
        assert len(base64.urlsafe_b64decode(sid)) == 18
    assert any("-" in sid or "_" in sid for sid in ids)  # the URL-safe alphabet


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


# --- small pure helpers -----------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (None, None),
        ("", None),
        (f"{COOKIE}=abc", "abc"),
        (f"a=1; {COOKIE}=abc; b=2", "abc"),
        (f" a = 1 ;  {COOKIE} = abc ; ", "abc"),
        (f'{COOKIE}="abc"', "abc"),
        (f"{COOKIE}=first; {COOKIE}=second", "first"),
        (f"X{COOKIE}=abc; {COOKIE}X=abc", None),
        (f"{COOKIE}", None),
        (f"{COOKIE}=", ""),
        (f"{COOKIE}=a=b", "a=b"),
    ],
)
def test_cookie_value(header: str | None, value: str | None) -> None:
    assert cookie_value(header, COOKIE) == value


@given(st.text())
def test_json_string_is_what_json_dumps_writes(text: str) -> None:
    assert json_string(text) == json.dumps(text)


@given(st.dictionaries(st.text(), st.one_of(st.text(), st.integers())))
def test_json_object_is_what_json_dumps_writes(data: dict[str, str | int]) -> None:
    assert json_object(data) == json.dumps(data).encode()


def test_tag_and_host_are_escaped(start: Start) -> None:
    served = start()
    served.app.tag = 'a"b\\c\n\u00e9\U0001f600'
    body = served.request("GET", "/").json()
    assert body["tag"] == 'a"b\\c\n\u00e9\U0001f600'
