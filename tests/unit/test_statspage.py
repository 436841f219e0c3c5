"""lbcluster_support.statspage: the stats page's credentials and CSV, read as the tools read them.

The page is served by a small HTTP server on 127.0.0.1 (loopback only).
"""

from __future__ import annotations

import base64
import http.server
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_haproxy import SHOW_STAT

from lbcluster_support import statspage


@pytest.fixture
def stats_page() -> Iterator[str]:
    """A stats page on 127.0.0.1 that wants admin:secret and serves SHOW_STAT at /;csv."""
    expected = statspage.authorization("secret")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_error(401)
                return
            if self.path != "/;csv":
                self.send_error(404)
                return
            body = SHOW_STAT.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_password_is_read_from_the_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "stats-password").write_text("s3cret\n")
    assert statspage.password(tmp_path) == "s3cret"


def test_missing_password_says_which_file_and_what_makes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"stats-password: .*make up"):
        statspage.password(tmp_path)


def test_authorization_is_basic_auth_of_admin() -> None:
    header = statspage.authorization("pw")
    assert header.startswith("Basic ")
    assert base64.b64decode(header.removeprefix("Basic ")) == b"admin:pw"


def test_server_states_of_the_nodes_backend(stats_page: str) -> None:
    states = statspage.server_states(statspage.authorization("secret"), stats_page)
    assert states == {"s1": "UP", "s2": "DOWN", "s3": "MAINT"}


def test_server_states_of_another_backend_has_no_servers(stats_page: str) -> None:
    auth = statspage.authorization("secret")
    assert statspage.server_states(auth, stats_page, backend="stats") == {}


def test_wrong_password_is_an_http_error(stats_page: str) -> None:
    with pytest.raises(urllib.error.HTTPError, match="401"):
        statspage.server_states(statspage.authorization("wrong"), stats_page)


def test_only_http_urls_are_opened() -> None:
    with pytest.raises(ValueError, match="expected http"):
        statspage.server_states("Basic x", "file:///etc/passwd")
