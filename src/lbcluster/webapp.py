"""The backend web app (what the lab's Node/Express app did), on lbcluster.httpd.

GET /          JSON {hello, ip, host, tag, sessionViews, id}, header x-backend-ip,
               session cookie NODESESSID (views counted per session on this backend)
HEAD /         200 while serving; 503 once draining, so health checks take it out
POST /delay    {"delay": ms} delays every later GET / response by that much
               (other connections are not held up)
other methods  on / and /delay: 405 with an Allow header
anything else  404

Errors are JSON {"error": "..."}. On SIGTERM or SIGINT the app drains: it keeps
answering requests for WEBAPP_DRAIN_SECONDS while failing health checks, then
closes. Environment: WEBAPP_PORT (3000), WEBAPP_DRAIN_SECONDS (3),
WEBAPP_ACCESS_LOG (on/off, default off), TAG (default: the host name),
WEBAPP_NOTIFY_FD (a file descriptor that gets a line once the app listens:
s6's readiness notification, which the backend's Serf agent waits for).

Only the standard library, and little of it (no asyncio, no logging, no
secrets, and json only once a POST /delay comes: responses are written by
json_object), so that a backend container boots on little CPU.
"""

from __future__ import annotations

import binascii
import math
import os
import socket
import sys
from collections import OrderedDict
from collections.abc import Mapping

from lbcluster.httpd import HttpError, Limits, Request, Response, Server

COOKIE = "NODESESSID"
MAX_SESSIONS = 10_000
MAX_DELAY_MS = 60_000
JSON_TYPE = "application/json; charset=utf-8"


def log(message: str) -> None:
    print(message, flush=True)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def new_session_id() -> str:
    """24 URL-safe characters of 18 random bytes, like secrets.token_urlsafe(18)
    (base64.urlsafe_b64encode without importing base64, which imports re)."""
    return binascii.b2a_base64(os.urandom(18), newline=False).translate(_URLSAFE).decode("ascii")


class SessionStore:
    """In-memory sessions, least recently used dropped beyond ``limit``."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self.limit = limit
        self._views: OrderedDict[str, int] = OrderedDict()

    def touch(self, session_id: str | None) -> tuple[str, int]:
        """Count one view; an unknown or missing id starts a new session."""
        if session_id is None or session_id not in self._views:
            session_id = new_session_id()
            self._views[session_id] = 0
        self._views[session_id] += 1
        self._views.move_to_end(session_id)
        while len(self._views) > self.limit:
            self._views.popitem(last=False)
        return session_id, self._views[session_id]

    def __len__(self) -> int:
        return len(self._views)


class DelayError(ValueError):
    pass


def parse_delay(body: bytes) -> int:
    """Validate a ``POST /delay`` body: ``{"delay": <0..60000 ms>}``."""
    import json  # noqa: PLC0415 - 5 ms of import a backend needs only if POST /delay comes

    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError) as exc:
        raise DelayError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "delay" not in data:
        raise DelayError('expected a JSON object like {"delay": 100}')
    delay = data["delay"]
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise DelayError(f"delay must be a number of milliseconds, got {json.dumps(delay)}")
    if not 0 <= delay <= MAX_DELAY_MS:
        raise DelayError(f"delay must be between 0 and {MAX_DELAY_MS} ms, got {delay}")
    return int(delay)


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a Cookie header ("a=1; b=2"), first one
    wins; whitespace around names and values and quotes around values are
    tolerated."""
    if not header:
        return None
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def json_string(text: str) -> str:
    """``text`` as a JSON string, exactly as ``json.dumps(text)`` writes it
    (ASCII only: anything else as \\uXXXX)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def json_object(data: Mapping[str, str | int]) -> bytes:
    """A flat JSON object of strings and integers, as ``json.dumps`` writes it."""
    items = (
        f"{json_string(key)}: {json_string(value) if isinstance(value, str) else int(value)}"
        for key, value in data.items()
    )
    return f"{{{', '.join(items)}}}".encode("ascii")


def json_response(
    status: int,
    data: Mapping[str, str | int],
    headers: list[tuple[str, str]] | None = None,
    after: float = 0.0,
) -> Response:
    return Response(
        status, [("Content-Type", JSON_TYPE), *(headers or ())], json_object(data), after
    )


def error_response(error: HttpError) -> Response:
    """What the server answers to a request it cannot parse or serve."""
    return json_response(error.status, {"error": error.message})


class App:
    """The app's state and its request handler (``handle``, for the server)."""

    def __init__(self, tag: str, host: str) -> None:
        self.tag = tag
        self.host = host
        self.sessions = SessionStore()
        self.delay_ms = 0
        self.draining = False

    def handle(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == "/":
            if method == "GET":
                return self.index(request)
            if method == "HEAD":
                return Response(503 if self.draining else 200, [("x-backend-ip", request.local_ip)])
            return self.not_allowed(request, "GET, HEAD")
        if path == "/delay":
            if method == "POST":
                return self.set_delay(request)
            return self.not_allowed(request, "POST")
        return json_response(404, {"error": f"not found: {method} {path}"})

    def index(self, request: Request) -> Response:
        ip = request.local_ip
        session_id, views = self.sessions.touch(cookie_value(request.headers.get("cookie"), COOKIE))
        # json_object's output, written out: this is the hot path.
        body = (
            f'{{"hello": "world!", "ip": {json_string(ip)}, "host": {json_string(self.host)}, '
            f'"tag": {json_string(self.tag)}, "sessionViews": {views}, '
            f'"id": {json_string(session_id)}}}'
        )
        headers = [
            ("Content-Type", JSON_TYPE),
            ("x-backend-ip", ip),
            ("Set-Cookie", f"{COOKIE}={session_id}; HttpOnly; Path=/"),
        ]
        return Response(200, headers, body.encode("ascii"), self.delay_ms / 1000)

    def set_delay(self, request: Request) -> Response:
        try:
            delay = parse_delay(request.body)
        except DelayError as exc:
            return json_response(400, {"error": str(exc)})
        self.delay_ms = delay
        return json_response(200, {"message": f"New timeout of {delay}ms configured."})

    @staticmethod
    def not_allowed(request: Request, allow: str) -> Response:
        error = {"error": f"method not allowed: {request.method} {request.path}"}
        return json_response(405, error, [("Allow", allow)])


def make_server(
    app: App,
    address: tuple[str, int],
    drain_seconds: float,
    access_log: bool = False,
    limits: Limits | None = None,
) -> Server:
    """A server for ``app`` (bound, not yet running) that drains when asked
    to stop: HEAD / turns 503, everything else is still served for
    ``drain_seconds``, then the server closes."""
    server = Server(
        app.handle,
        address,
        on_error=error_response,
        access_log=log if access_log else None,
        limits=limits,
    )

    stopping = False

    def stop() -> None:
        nonlocal stopping
        if stopping:  # a second signal changes nothing
            return
        stopping = app.draining = True
        log(f"stopping: failing health checks, still serving for {drain_seconds:.1f} s")
        server.call_later(drain_seconds, server.close)

    server.on_stop = stop
    return server


def notify_ready(fd: int) -> None:
    """Say the app is ready, as s6 reads it: a line on ``fd``, which is then closed."""
    try:
        os.write(fd, b"\n")
        os.close(fd)
    except OSError as exc:
        log(f"cannot say that the app is ready on file descriptor {fd}: {exc.strerror}")


def serve(
    app: App,
    port: int,
    drain_seconds: float,
    access_log: bool = False,
    ready_fd: int | None = None,
) -> None:
    """Serve on 0.0.0.0:``port`` until SIGTERM or SIGINT, then drain and stop; once it
    listens, say so on ``ready_fd`` (connections wait in the listen queue meanwhile)."""
    server = make_server(app, ("0.0.0.0", port), drain_seconds, access_log)  # noqa: S104
    restore = server.catch_signals()
    try:
        log(f"listening on :{server.port}")
        if ready_fd is not None:
            notify_ready(ready_fd)
        server.run()
    finally:
        restore()
    log("stopped")


class SettingError(ValueError):
    pass


def read_settings(environ: Mapping[str, str]) -> tuple[int, float, bool]:
    """(port, drain seconds, access log) from the environment."""
    text = environ.get("WEBAPP_PORT", "3000")
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SettingError(f"WEBAPP_PORT={text!r}: expected a port number (0-65535)")
    text = environ.get("WEBAPP_DRAIN_SECONDS", "3")
    try:
        drain = float(text)
    except ValueError:
        drain = math.nan
    if not 0 <= drain < math.inf:
        raise SettingError(f"WEBAPP_DRAIN_SECONDS={text!r}: expected a number of seconds >= 0")
    text = environ.get("WEBAPP_ACCESS_LOG", "off")
    if text not in ("on", "off"):
        raise SettingError(f"WEBAPP_ACCESS_LOG={text!r}: expected on or off")
    return port, drain, text == "on"


def read_notify_fd(environ: Mapping[str, str]) -> int | None:
    """The readiness file descriptor of WEBAPP_NOTIFY_FD, or None when it is not set."""
    text = environ.get("WEBAPP_NOTIFY_FD", "")
    if not text:
        return None
    if not text.isdigit() or int(text) < 3:
        raise SettingError(
            f"WEBAPP_NOTIFY_FD={text!r}: expected a file descriptor number of 3 or more"
        )
    return int(text)


def main() -> int:
    try:
        port, drain, access_log = read_settings(os.environ)
        ready_fd = read_notify_fd(os.environ)
    except SettingError as exc:
        print(f"lbcluster-webapp: {exc}", file=sys.stderr)
        return 2
    host = socket.gethostname()
    tag = os.environ.get("TAG") or host
    try:
        serve(App(tag, host), port, drain, access_log, ready_fd)
    except OSError as exc:
        print(f"lbcluster-webapp: cannot serve on :{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
