"""The backend web app (what the lab's Node/Express app did, in Python/aiohttp).

GET /          JSON {hello, ip, host, tag, sessionViews, id}, header x-backend-ip,
               session cookie NODESESSID (views counted per session on this backend)
HEAD /         200 while serving; 503 once draining, so health checks take it out
POST /delay    {"delay": ms} sets an artificial response delay
anything else  404

On SIGTERM the app drains: it keeps answering requests for
WEBAPP_DRAIN_SECONDS while failing health checks, then closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

COOKIE = "NODESESSID"
MAX_SESSIONS = 10_000
MAX_DELAY_MS = 60_000

log = logging.getLogger("webapp")


class SessionStore:
    """In-memory sessions, least recently used dropped beyond ``limit``."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self.limit = limit
        self._views: OrderedDict[str, int] = OrderedDict()

    def touch(self, session_id: str | None) -> tuple[str, int]:
        """Count one view; an unknown or missing id starts a new session."""
        if session_id is None or session_id not in self._views:
            session_id = secrets.token_urlsafe(18)
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


@dataclass
class AppState:
    tag: str
    host: str
    sessions: SessionStore = field(default_factory=SessionStore)
    delay_ms: int = 0
    draining: bool = False


STATE = web.AppKey("state", AppState) if hasattr(web, "AppKey") else "state"


def _state(request: web.Request) -> AppState:
    state: AppState = request.app[STATE]
    return state


def _local_ip(request: web.Request) -> str:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return str(sockname[0]) if sockname else "unknown"


async def index(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    ip = _local_ip(request)
    if request.method == "HEAD":
        status = 503 if state.draining else 200
        return web.Response(status=status, headers={"x-backend-ip": ip})
    if state.delay_ms:
        await asyncio.sleep(state.delay_ms / 1000)
    session_id, views = state.sessions.touch(request.cookies.get(COOKIE))
    body: dict[str, Any] = {
        "hello": "world!",
        "ip": ip,
        "host": state.host,
        "tag": state.tag,
        "sessionViews": views,
        "id": session_id,
    }
    response = web.json_response(body, headers={"x-backend-ip": ip})
    response.set_cookie(COOKIE, session_id, httponly=True, path="/")
    return response


async def set_delay(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        delay = parse_delay(await request.read())
    except DelayError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    state.delay_ms = delay
    return web.json_response({"message": f"New timeout of {delay}ms configured."})


async def not_found(request: web.Request) -> web.Response:
    return web.json_response({"error": f"not found: {request.method} {request.path}"}, status=404)


def make_app(tag: str, host: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[STATE] = AppState(tag=tag, host=host)
    app.router.add_get("/", index)  # allow_head: HEAD / is the health check
    app.router.add_post("/delay", set_delay)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


async def serve(
    app: web.Application, port: int, drain_seconds: float, access_log: bool = False
) -> None:
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        access_log_format='%a "%r" %s %b %Tfs "%{User-Agent}i"',
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, host="0.0.0.0", port=port, reuse_address=True)  # noqa: S104
    await site.start()
    log.info("listening on :%d", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app[STATE].draining = True
    log.info("stopping: failing health checks, still serving for %.1f s", drain_seconds)
    await asyncio.sleep(drain_seconds)
    await runner.cleanup()
    log.info("stopped")


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
    host = socket.gethostname()
    tag = os.environ.get("TAG") or host
    try:
        port = int(os.environ.get("WEBAPP_PORT", "3000"))
        drain = float(os.environ.get("WEBAPP_DRAIN_SECONDS", "3"))
    except ValueError as exc:
        print(f"lbcluster-webapp: bad WEBAPP_PORT or WEBAPP_DRAIN_SECONDS: {exc}", file=sys.stderr)
        return 2
    access_log = os.environ.get("WEBAPP_ACCESS_LOG", "off")
    if access_log not in ("on", "off"):
        print(
            f"lbcluster-webapp: WEBAPP_ACCESS_LOG={access_log!r}: expected on or off",
            file=sys.stderr,
        )
        return 2
    asyncio.run(serve(make_app(tag, host), port, drain, access_log == "on"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
