"""A small HTTP/1.1 server on the standard library's ``selectors`` and ``socket``.

It serves the backend web app (lbcluster.webapp) and imports next to nothing,
so that a container boots on little CPU: no asyncio, no http.server, no email,
no ssl, no logging.

Two parts:

- pure functions and classes, no I/O: ``RequestParser`` turns received bytes
  into ``Request`` objects (or an ``HttpError`` to answer before closing),
  ``encode_response`` turns a ``Response`` into bytes;
- ``Server``: one thread, non-blocking sockets, one event loop. Connections are
  kept alive (HTTP/1.1 by default; HTTP/1.0 with ``Connection: keep-alive``)
  and may pipeline: a connection is not read while one of its responses is
  delayed or unsent, so its responses go out in order. A delayed response
  (``Response.after``) waits on a timer heap and holds no other connection up.
  Idle connections are closed after ``idle_timeout`` seconds. Beyond
  ``max_connections`` the server stops accepting until one closes (the kernel's
  backlog holds the rest).

Request bodies come with Content-Length or ``Transfer-Encoding: chunked``
(trailers are read and dropped); both at once is a 400, any other transfer
coding a 501. Limits: 16 KiB of request head (431), 64 KiB of body (413).
A malformed request is answered 400, then the connection closes. Every
response carries Content-Length and Date.

Left out on purpose: TLS, HTTP/2, percent-decoding of paths, a required Host
header (HAProxy's HTTP/1.0 health checks send none), and any deadline for a
request that trickles in other than the idle timeout (the app sits behind
HAProxy, whose ``timeout http-request`` covers that).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 4096
# Longer than any idle-connection pool in front of us (HAProxy's included):
# the proxy, not the app, decides when a kept-alive connection ends.
IDLE_TIMEOUT = 75.0
# After answering a request we will not read (an error), the write side is shut
# and input is read and dropped this long, so the client gets the response
# instead of a reset.
LINGER_SECONDS = 2.0
MAX_CHUNK_LINE = 1024
READ_SIZE = 65536
# A connection whose client does not read its responses is not read either
# beyond this much unsent output.
OUT_HIGH_WATER = 256 * 1024

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Character classes, checked with bytes.translate(None, chars) (no re: it
# costs import time): what is left after deleting them is what is not allowed.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VCHAR = bytes(range(0x21, 0x7F))
_CTL = bytes((*range(0x09), *range(0x0A, 0x20), 0x7F))  # control characters but HTAB
_HEX = b"0123456789ABCDEFabcdef"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HttpError(Exception):
    """A request that cannot be served: answer ``status``, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class Request:
    """One parsed request. Header names are lower case; repeated fields are
    joined with ", " ("; " for Cookie). ``peer`` and ``local_ip`` are set by
    the server: the client's address and the local address it connected to."""

    __slots__ = (
        "body",
        "headers",
        "keep_alive",
        "local_ip",
        "method",
        "path",
        "peer",
        "target",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: tuple[int, int],
        headers: dict[str, str],
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.target = target
        self.path = request_path(target)
        self.version = version
        self.headers = headers
        self.body = body
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self.keep_alive = "keep-alive" in tokens if version == (1, 0) else "close" not in tokens
        self.peer = ""
        self.local_ip = ""

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} HTTP/{self.version[0]}.{self.version[1]}>"


class Response:
    """What a handler returns. The server adds Content-Length, Date and
    Connection; header values must not contain CR or LF. ``after``: seconds
    to hold the response back before it is sent (its connection reads nothing
    meanwhile; other connections are not held up)."""

    __slots__ = ("after", "body", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        after: float = 0.0,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.after = after


Handler = Callable[[Request], Response]


def request_path(target: str) -> str:
    """The path of a request target: origin form without its query, or the
    path of an absolute-form target ("http://host/x?y" -> "/x")."""
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if sep and scheme.lower() in ("http", "https"):
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
    return target.partition("?")[0]


def _is_token(data: bytes) -> bool:
    return bool(data) and not data.translate(None, _TOKEN)


def _has_ctl(data: bytes) -> bool:
    return len(data.translate(None, _CTL)) != len(data)


def _request_line(line: bytes) -> tuple[str, str, tuple[int, int]]:
    """``method SP request-target SP HTTP/1.x`` -> (method, target, version)."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if (
        not _is_token(method)
        or not target
        or target.translate(None, _VCHAR)
        or len(version) != 8
        or version[:5] != b"HTTP/"
        or version[6:7] != b"."
        or not version[5:6].isdigit()
        or not version[7:8].isdigit()
    ):
        raise HttpError(400, "malformed request line")
    if version[5:6] != b"1":
        raise HttpError(505, f"{version.decode('ascii')} is not supported")
    # HTTP/1.x beyond 1.1 is served as 1.1 (RFC 9110, section 2.5).
    return method.decode("ascii"), target.decode("ascii"), (1, 0 if version[7:8] == b"0" else 1)


def _field(line: bytes) -> tuple[str, str]:
    """One header (or trailer) line -> (lower-case name, value without OWS)."""
    name, colon, value = line.partition(b":")
    if not colon or not _is_token(name):
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding in the request head")
        raise HttpError(400, "malformed header line")
    if _has_ctl(value):
        raise HttpError(400, "control character in a header value")
    return name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")


class RequestParser:
    """Incremental request parser: bytes in, requests out, no I/O.

    ``feed()`` appends received bytes; ``next_request()`` returns the next
    complete request, None while more bytes are needed, or an HttpError when
    the input is not a request we serve (answer it, then close: from then on
    the parser returns that same error). ``expect_continue`` is set while the
    request being read waits for "100 Continue" before it sends its body.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.expect_continue = False
        self._buf = bytearray()
        self._start = 0  # first byte not consumed
        self._scan = 0  # where to resume looking for the end of the head
        self._request: Request | None = None  # head read, body still coming
        self._chunked = False
        self._length = 0  # Content-Length of the body still coming
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._error: HttpError | None = None

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buf[: self._start]
            self._scan = max(0, self._scan - self._start)
            self._start = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a request."""
        return len(self._buf) - self._start

    def next_request(self) -> Request | HttpError | None:
        # Nothing buffered is the usual case once a request is answered.
        if self._error is None and (self._request is not None or self._start < len(self._buf)):
            try:
                request = self._request or self._read_head()
                if request is not None and self._read_body(request):
                    self._request = None
                    self.expect_continue = False
                    return request
            except HttpError as exc:
                self._error = exc
                self.expect_continue = False
        return self._error

    def _read_head(self) -> Request | None:
        buf = self._buf
        start = self._start
        while buf.startswith(b"\r\n", start):  # empty lines before a request are allowed
            start += 2
        self._start = start
        if start >= len(buf):
            return None
        scan = max(start, self._scan)
        end = buf.find(b"\r\n\r\n", scan)
        if end < 0:
            if buf.find(b"\n\n", scan) >= 0:
                raise HttpError(400, "lines of the request head must end with CRLF")
            if len(buf) - start > self.max_head:
                raise HttpError(431, f"request head larger than {self.max_head} bytes")
            self._scan = max(start, len(buf) - 3)
            return None
        if end + 4 - start > self.max_head:
            raise HttpError(431, f"request head larger than {self.max_head} bytes")
        lines = bytes(buf[start:end]).split(b"\r\n")
        self._start = end + 4
        self._scan = 0
        method, target, version = _request_line(lines[0])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, value = _field(line)
            if name in headers:
                headers[name] += ("; " if name == "cookie" else ", ") + value
            else:
                headers[name] = value
        request = Request(method, target, version, headers)
        self._framing(request)
        self._request = request
        return request

    def _read_body(self, request: Request) -> bool:
        """Complete ``request`` with its body; False while more bytes are needed."""
        if self._chunked:
            if not self._read_chunks():
                return False
            request.body = b"".join(self._chunks)
            self._chunks = []
            self._body_size = 0
            self._chunked = False
        elif self._length:
            end = self._start + self._length
            if len(self._buf) < end:
                return False
            request.body = bytes(self._buf[self._start : end])
            self._start = end
            self._length = 0
        return True

    def _framing(self, request: Request) -> None:
        """How the body is delimited (RFC 9112, section 6)."""
        headers = request.headers
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if coding is not None:
            if length is not None:
                raise HttpError(400, "both Content-Length and Transfer-Encoding")
            if request.version == (1, 0):
                raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if [c.strip().lower() for c in coding.split(",")] != ["chunked"]:
                raise HttpError(501, f"unsupported transfer coding: {coding[:100]}")
            self._chunked = True
        elif length is not None:
            values = {v.strip() for v in length.split(",")}
            text = values.pop()
            if values or not (text.isascii() and text.isdigit()):
                raise HttpError(400, "malformed Content-Length")
            text = text.lstrip("0")
            if len(text) > 12 or int(text or "0") > self.max_body:
                raise HttpError(413, f"request body larger than {self.max_body} bytes")
            self._length = int(text or "0")
        else:
            return
        if (
            request.version == (1, 1)
            and headers.get("expect", "").lower() == "100-continue"
            and (self._chunked or self._length)
        ):
            self.expect_continue = True

    def _read_chunks(self) -> bool:
        """Decode the chunks received so far; True once the last one is in."""
        buf = self._buf
        while True:
            pos = self._start
            eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
            if eol < 0:
                if len(buf) - pos >= MAX_CHUNK_LINE + 2:
                    raise HttpError(400, "chunk size line too long")
                return False
            line = bytes(buf[pos:eol])
            size = line.partition(b";")[0].rstrip(b" \t")
            if not size or size.translate(None, _HEX) or _has_ctl(line):
                raise HttpError(400, "malformed chunk size line")
            size = size.lstrip(b"0")
            if len(size) > 8 or self._body_size + int(size or b"0", 16) > self.max_body:
                raise HttpError(413, f"request body larger than {self.max_body} bytes")
            length = int(size or b"0", 16)
            if length == 0:
                return self._read_trailers(eol + 2)
            end = eol + 2 + length
            if len(buf) < end + 2:
                return False
            if buf[end : end + 2] != b"\r\n":
                raise HttpError(400, "chunk data not followed by CRLF")
            self._chunks.append(bytes(buf[eol + 2 : end]))
            self._body_size += length
            self._start = end + 2

    def _read_trailers(self, pos: int) -> bool:
        buf = self._buf
        if buf[pos : pos + 2] == b"\r\n":
            self._start = pos + 2
            return True
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            if len(buf) - pos > self.max_head:
                raise HttpError(431, f"trailer section larger than {self.max_head} bytes")
            return False
        if end + 4 - pos > self.max_head:
            raise HttpError(431, f"trailer section larger than {self.max_head} bytes")
        for line in bytes(buf[pos:end]).split(b"\r\n"):
            _field(line)  # checked, then dropped
        self._start = end + 4
        return True


def http_date(seconds: float) -> str:
    """An IMF-fixdate, as in the Date header: "Sun, 06 Nov 1994 08:49:37 GMT"."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def encode_response(
    response: Response,
    *,
    head: bool = False,
    keep_alive: bool = True,
    http10: bool = False,
    date: str = "",
) -> bytes:
    """The bytes of a response: status line, headers, Content-Length, then
    the body unless it answers a HEAD request. ``keep_alive`` False adds
    ``Connection: close``; an HTTP/1.0 client kept alive gets
    ``Connection: keep-alive``."""
    status = response.status
    body = response.body
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    if date:
        lines.append(f"Date: {date}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    elif http10:
        lines.append("Connection: keep-alive")
    lines.append("\r\n")
    wire = "\r\n".join(lines).encode("latin-1")
    return wire if head else wire + body


def error_response(error: HttpError) -> Response:
    """The default answer to a request that cannot be served: plain text."""
    return Response(
        error.status,
        [("Content-Type", "text/plain; charset=utf-8")],
        f"{error.message}\n".encode(),
    )


def access_line(peer: str, request: Request | None, status: int, size: int, seconds: float) -> str:
    """``<peer> "GET / HTTP/1.1" 200 <bytes> <seconds>s "<user agent>"``."""
    if request is None:
        line, agent = "-", "-"
    else:
        major, minor = request.version
        line = f"{request.method} {request.target} HTTP/{major}.{minor}"
        agent = request.headers.get("user-agent", "-")
    return f'{peer} "{line}" {status} {size} {seconds:.6f}s "{agent}"'


class _Connection:
    __slots__ = (
        "closed",
        "closing",
        "eof",
        "last_active",
        "lingering",
        "local_ip",
        "mask",
        "out",
        "parser",
        "peer",
        "pending",
        "sock",
    )

    def __init__(
        self, sock: socket.socket, peer: str, local_ip: str, parser: RequestParser, now: float
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.local_ip = local_ip
        self.parser = parser
        self.out = bytearray()
        self.pending = False  # a delayed response is on the timer heap
        self.closing = False  # close once the output is sent
        self.eof = False  # the client sent all it will
        self.lingering = False
        self.closed = False
        self.mask = 0  # the events registered with the selector (0: not registered)
        self.last_active = now


def _ignore_signal(signum: int, frame: object) -> None:
    """Signals reach the loop through the wakeup fd; the handler does nothing."""


_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_STOP_BYTES = frozenset((0, int(signal.SIGTERM), int(signal.SIGINT)))


class Limits:
    """What one server accepts (see the module's constants)."""

    __slots__ = ("idle_timeout", "max_body", "max_connections", "max_head")

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
    ) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_head = max_head
        self.max_body = max_body


class Server:
    """The event loop: listens on ``address`` (host, port; SO_REUSEADDR; bound
    when constructed, port 0 picks a free one, see ``self.port``) and answers
    each request with ``handler(request)``, and requests it cannot parse with
    ``on_error(error)``. ``access_log``, if given, gets one line per response.

    ``run()`` serves until ``close()``. ``stop()`` (any thread), and SIGTERM
    and SIGINT once ``catch_signals()`` is called (main thread only), call
    ``on_stop`` in the loop; by default that is ``close``. ``close()`` and
    ``call_later()`` belong to the loop's thread (timers, ``on_stop``, the
    handler).
    """

    def __init__(
        self,
        handler: Handler,
        address: tuple[str, int] = ("0.0.0.0", 0),  # noqa: S104
        *,
        on_error: Callable[[HttpError], Response] = error_response,
        access_log: Callable[[str], None] | None = None,
        limits: Limits | None = None,
    ) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(1024)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.port: int = listener.getsockname()[1]
        self.on_stop: Callable[[], None] = self.close
        self.limits = limits or Limits()
        self._listener: socket.socket | None = listener
        self._handler = handler
        self._on_error = on_error
        self._access_log = access_log
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: set[_Connection] = set()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._accepting = False
        self._running = False
        self._sweeping = False
        self._now = time.monotonic()
        self._date_second = -1
        self._date = ""

    # --- the loop -------------------------------------------------------------

    def run(self) -> None:
        if self._listener is None:
            return
        self._selector.register(self._wake_r, _READ)
        self._resume_accepting()
        self._running = True
        try:
            while self._running:
                timeout = self._run_timers()
                if self._running:
                    self._dispatch(self._selector.select(timeout))
        finally:
            self.close()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def catch_signals(self) -> Callable[[], None]:
        """From now on SIGTERM and SIGINT call ``on_stop`` in the loop (through
        a byte on the wake socket, even before ``run()``); the function
        returned puts the previous handlers back."""
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        term = signal.signal(signal.SIGTERM, _ignore_signal)
        interrupt = signal.signal(signal.SIGINT, _ignore_signal)

        def restore() -> None:
            signal.signal(signal.SIGTERM, term)
            signal.signal(signal.SIGINT, interrupt)
            signal.set_wakeup_fd(previous_fd)

        return restore

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        self._now = time.monotonic()
        for key, mask in events:
            conn = key.data
            if conn is not None:
                if conn.closed:
                    continue
                if mask & _READ:
                    self._on_readable(conn)
                if mask & _WRITE and not conn.closed:
                    self._process(conn)
            elif key.fileobj is self._wake_r:
                self._on_wake()
            else:
                self._accept()

    def stop(self) -> None:
        """Ask the loop to call ``on_stop`` (from any thread)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the loop has ended
            return

    def close(self) -> None:
        """Close the listener and every connection, and end ``run()``."""
        self._running = False
        if self._listener is not None:
            self._pause_accepting()
            self._listener.close()
            self._listener = None
        for conn in list(self._conns):
            if conn.out and not conn.closed:
                self._flush(conn)  # a last chance for what is already answered
            self._drop(conn)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), callback))

    def _run_timers(self) -> float | None:
        """Run the timers that are due; the seconds until the next one."""
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            heapq.heappop(timers)[2]()
            now = time.monotonic()
        return max(0.0, timers[0][0] - now) if timers else None

    def _on_wake(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except OSError:
            return
        if not _STOP_BYTES.isdisjoint(data):
            self.on_stop()

    # --- accepting ------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        while True:
            if len(self._conns) >= self.limits.max_connections:
                self._pause_accepting()
                return
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of file descriptors or memory: pause
                print(f"accept failed, pausing for 1 s: {exc}", file=sys.stderr, flush=True)
                self._pause_accepting()
                self.call_later(1.0, self._resume_accepting)
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                local_ip = str(sock.getsockname()[0])
            except OSError:
                sock.close()
                continue
            parser = RequestParser(self.limits.max_head, self.limits.max_body)
            conn = _Connection(sock, str(address[0]), local_ip, parser, self._now)
            self._conns.add(conn)
            self._selector.register(sock, _READ, conn)
            conn.mask = _READ
            if not self._sweeping:
                self._sweeping = True
                self.call_later(min(1.0, self.limits.idle_timeout / 4), self._sweep)

    def _pause_accepting(self) -> None:
        if self._accepting and self._listener is not None:
            self._selector.unregister(self._listener)
        self._accepting = False

    def _resume_accepting(self) -> None:
        if (
            not self._accepting
            and self._listener is not None
            and len(self._conns) < self.limits.max_connections
        ):
            self._selector.register(self._listener, _READ)
            self._accepting = True

    def _sweep(self) -> None:
        """Close the connections idle for too long (lingering: LINGER_SECONDS)."""
        now = time.monotonic()
        for conn in list(self._conns):
            limit = LINGER_SECONDS if conn.lingering else self.limits.idle_timeout
            if not conn.pending and now - conn.last_active > limit:
                self._drop(conn)
        self._sweeping = bool(self._conns)
        if self._sweeping:
            self.call_later(min(1.0, self.limits.idle_timeout / 4), self._sweep)

    # --- one connection -------------------------------------------------------

    def _on_readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if conn.lingering:
            if not data:
                self._drop(conn)
            return
        conn.last_active = self._now
        if data:
            conn.parser.feed(data)
        else:
            conn.eof = True
        self._process(conn)

    def _process(self, conn: _Connection) -> None:
        """Answer the complete requests received, in order, then send."""
        parser = conn.parser
        while not (conn.pending or conn.closing) and len(conn.out) < OUT_HIGH_WATER:
            item = parser.next_request()
            if item is None:
                if parser.expect_continue and not conn.eof:
                    parser.expect_continue = False
                    conn.out += CONTINUE
                elif conn.eof:  # the client sent all it will: close once answered
                    conn.closing = True
                break
            if isinstance(item, HttpError):
                self._respond(conn, None, self._on_error(item), self._now)
                break
            item.peer = conn.peer
            item.local_ip = conn.local_ip
            started = time.monotonic() if self._access_log is not None else 0.0
            try:
                response = self._handler(item)
            except Exception:  # a broken handler must not stop the loop
                import traceback  # noqa: PLC0415 - only ever needed here

                traceback.print_exc()
                response = self._on_error(HttpError(500, "internal server error"))
            if response.after > 0:
                conn.pending = True
                self.call_later(
                    response.after, partial(self._deliver, conn, item, response, started)
                )
                break
            self._respond(conn, item, response, started)
        self._flush(conn)

    def _deliver(
        self, conn: _Connection, request: Request, response: Response, started: float
    ) -> None:
        """A delayed response is due."""
        if conn.closed:
            return
        conn.pending = False
        self._now = time.monotonic()
        self._respond(conn, request, response, started)
        self._process(conn)

    def _respond(
        self, conn: _Connection, request: Request | None, response: Response, started: float
    ) -> None:
        keep_alive = request is not None and request.keep_alive
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = http_date(second)
        wire = encode_response(
            response,
            head=request is not None and request.method == "HEAD",
            keep_alive=keep_alive,
            http10=request is not None and request.version == (1, 0),
            date=self._date,
        )
        conn.out += wire
        if not keep_alive:
            conn.closing = True
        if self._access_log is not None:
            seconds = time.monotonic() - started if request is not None else 0.0
            self._access_log(access_line(conn.peer, request, response.status, len(wire), seconds))

    def _flush(self, conn: _Connection) -> None:
        """Send what the socket takes now; the rest when it is writable."""
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return
            if sent:
                del conn.out[:sent]
                conn.last_active = self._now
        if conn.closing and not conn.out and not conn.lingering:
            self._linger(conn)
        else:
            self._update_interest(conn)

    def _linger(self, conn: _Connection) -> None:
        """Everything is answered: shut the write side, drop what still comes
        in until the client closes (or LINGER_SECONDS), then close."""
        if conn.eof:
            self._drop(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.lingering = True
        conn.last_active = self._now
        self._update_interest(conn)

    def _update_interest(self, conn: _Connection) -> None:
        if conn.lingering:
            want = _READ
        else:
            want = 0
            if not (conn.pending or conn.closing or conn.eof) and len(conn.out) < OUT_HIGH_WATER:
                want = _READ
            if conn.out:
                want |= _WRITE
        if want != conn.mask:
            if not want:
                self._selector.unregister(conn.sock)
            elif not conn.mask:
                self._selector.register(conn.sock, want, conn)
            else:
                self._selector.modify(conn.sock, want, conn)
            conn.mask = want

    def _drop(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.mask:
            self._selector.unregister(conn.sock)
            conn.mask = 0
        conn.sock.close()
        self._conns.discard(conn)
        self._resume_accepting()
