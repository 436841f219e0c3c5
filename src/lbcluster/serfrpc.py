"""The one way in from Serf: a small client of the agent's RPC protocol
(msgpack over TCP), and the decoder of its records into validated members.

The membership handler keeps one connection streaming events and another
for ``members`` queries (:class:`Agent`), so an event reaches it without
Serf forking a process, and reading the membership costs a round trip, not
a ``serf`` process. The status tool and the one-shot handler commands read
the membership the same way. Protocol: https://github.com/hashicorp/serf/blob/master/website/
source/docs/agent/rpc.html.markdown (request header ``{Command, Seq}``,
response header ``{Seq, Error}``, each optionally followed by a body).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgpack

from .events import MEMBER_EVENTS, OTHER_EVENTS, Event, InvalidEvent
from .members import InvalidMember, Member, ParseResult, make_member, printable

T = TypeVar("T")

# Every member event, and user events (logged as ignored).
STREAM_TYPES = "member-join,member-leave,member-failed,member-update,member-reap,user"

# The line the agent logs the moment it learns that a member joined (Serf's
# handleNodeJoin), before the member-join event waits out Serf's coalescing
# (1 s of quiet, up to 3 s): "2026/12/07 00:48:21 [INFO] serf: EventMemberJoin:
# s5 172.18.0.7". Anchored after the timestamp: a member's name cannot fake it.
JOIN_LOG = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[INFO\] serf: EventMemberJoin: ")


class SerfUnavailable(RuntimeError):
    """The local Serf agent did not answer, or answered something unreadable."""


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise SerfUnavailable(f"Serf RPC address {addr!r}: expected host:port")
    return host.strip("[]"), int(port)


class SerfRPC:
    """One RPC connection: handshake and auth on connect, then commands or a stream."""

    def __init__(self, addr: str, auth: str = "", timeout: float = 5.0) -> None:
        self.addr = addr
        self._seq = 0
        self._stream_seq = -1
        self._monitor_seq = -1
        # Records of the streams that came while a command waited for its answer.
        self._queued: deque[tuple[int, dict[str, Any]]] = deque()
        # Serf writes strings and byte arrays (addresses, payloads) alike as
        # msgpack raw: keep undecodable bytes losslessly (see _bytes()).
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        try:
            self._sock = socket.create_connection(split_addr(addr), timeout=timeout)
        except OSError as exc:
            raise SerfUnavailable(f"cannot connect to the Serf agent at {addr}: {exc}") from None
        try:
            self.request("handshake", {"Version": 1})
            if auth:
                self.request("auth", {"AuthKey": auth})
        except SerfUnavailable:
            self.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SerfRPC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, command: str, body: dict[str, Any] | None) -> int:
        seq = self._seq
        self._seq += 1
        data = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            data += msgpack.packb(body)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise SerfUnavailable(f"Serf agent at {self.addr}: {command}: {exc}") from None
        return seq

    def read(self, timeout: float | None = None) -> Any:
        """The next msgpack object; TimeoutError when none arrives in ``timeout`` s.

        A timeout loses nothing: partial data stays in the unpacker.
        """
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            self._sock.settimeout(timeout)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:
                raise SerfUnavailable(f"Serf agent at {self.addr}: {exc}") from None
            if not data:
                raise SerfUnavailable(f"Serf agent at {self.addr} closed the connection")
            self._unpacker.feed(data)

    def _header(self, command: str, seq: int, timeout: float | None) -> None:
        """Read the answer to ``command``; records of a stream that come first wait in
        the queue next_event() reads."""
        while True:
            try:
                header = self.read(timeout)
            except TimeoutError:
                raise SerfUnavailable(
                    f"Serf agent at {self.addr}: no answer to {command}"
                ) from None
            other = header.get("Seq") if isinstance(header, dict) else None
            if other == seq or other not in (self._stream_seq, self._monitor_seq):
                break
            self._queued.append((other, self._body("stream record")))
        if not isinstance(header, dict) or header.get("Seq") != seq:
            raise SerfUnavailable(f"Serf agent at {self.addr}: unexpected answer to {command}")
        if header.get("Error"):
            raise SerfUnavailable(f"Serf agent at {self.addr}: {command}: {header['Error']}")

    def request(
        self, command: str, body: dict[str, Any] | None = None, *, answer: bool = False
    ) -> Any:
        """Send a command, check its header and return its body (``answer=True``) or None."""
        seq = self._send(command, body)
        self._header(command, seq, 5.0)
        if not answer:
            return None
        try:
            return self.read(5.0)
        except TimeoutError:
            raise SerfUnavailable(f"Serf agent at {self.addr}: {command}: no body") from None

    def members(self) -> ParseResult:
        """Every member the agent knows (any status), validated one by one."""
        body = self.request("members", answer=True)
        raw = body.get("Members") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise SerfUnavailable(f"Serf agent at {self.addr}: members: no member list")
        return decode_members(raw)

    def subscribe(self, types: str = STREAM_TYPES, *, log: bool = False) -> None:
        """Start streaming events on this connection (then only next_event() is used);
        ``log``: the agent's log lines too (INFO and above; Serf first sends the last
        few hundred it kept), as ``{"Log": line}``."""
        self._stream_seq = self._send("stream", {"Type": types})
        self._header("stream", self._stream_seq, 5.0)
        if log:
            self._monitor_seq = self._send("monitor", {"LogLevel": "INFO"})
            self._header("monitor", self._monitor_seq, 5.0)

    def _body(self, what: str) -> dict[str, Any]:
        try:
            body = self.read(5.0)
        except TimeoutError:
            raise SerfUnavailable(f"Serf agent at {self.addr}: {what} without a body") from None
        return body if isinstance(body, dict) else {}

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next streamed event's body, or a log line as ``{"Log": line}``; None if
        none came within ``timeout`` s."""
        if self._queued:
            seq, body = self._queued.popleft()
        else:
            try:
                header = self.read(timeout)
            except TimeoutError:
                return None
            seq = header.get("Seq", -1) if isinstance(header, dict) else -1
            if seq == -1 or seq not in (self._stream_seq, self._monitor_seq):
                raise SerfUnavailable(f"Serf agent at {self.addr}: unexpected stream message")
            body = self._body("event")
        if seq == self._monitor_seq:
            line = body.get("Log")
            return {"Log": line if isinstance(line, str) else ""}
        return body


class Agent:
    """The local agent's membership over one RPC connection, kept open while it works.

    A failed query closes the connection; the next one opens a new one (the
    agent may have been restarted by s6).
    """

    def __init__(self, addr: str, auth: str = "", timeout: float = 5.0) -> None:
        self.addr = addr
        self.auth = auth
        self.timeout = timeout
        self._rpc: SerfRPC | None = None

    def members(self) -> ParseResult:
        """Every member the agent knows (any status), validated one by one."""
        return self._call(lambda rpc: rpc.members())

    def join(self, addresses: list[str]) -> int:
        """Serf's join of ``addresses`` (``ip:port``, no replay of old user events): how
        many answered."""
        body = self._call(
            lambda rpc: rpc.request("join", {"Existing": addresses, "Replay": False}, answer=True)
        )
        number = body.get("Num") if isinstance(body, dict) else None
        return number if isinstance(number, int) else 0

    def force_leave(self, name: str) -> None:
        """Serf's force-leave of ``name``: this agent records that it left, and tells the others."""
        self._call(lambda rpc: rpc.request("force-leave", {"Node": name}))

    def _call(self, ask: Callable[[SerfRPC], T]) -> T:
        if self._rpc is None:
            self._rpc = SerfRPC(self.addr, self.auth, self.timeout)
        try:
            return ask(self._rpc)
        except SerfUnavailable:
            self.close()
            raise

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise InvalidMember(f"address is not a byte string: {type(value).__name__}")


def decode_member(item: object) -> Member:
    """Validate one member record (``Addr``: 4 or 16 bytes of IP, IPv4-mapped allowed)."""
    if not isinstance(item, Mapping):
        raise InvalidMember("member entry is not a map")
    name, tags = item.get("Name"), item.get("Tags")
    if not isinstance(name, str):
        raise InvalidMember(f"member name is not a string: {printable(str(name))}")
    addr = _bytes(item.get("Addr", b""))
    if len(addr) not in (4, 16):
        raise InvalidMember(f"member {printable(name)}: address of {len(addr)} bytes")
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise InvalidMember(f"member {printable(name)}: tags are not strings")
    return make_member(name, ip.compressed, tags, str(item.get("Status")))


def decode_members(raw: list[Any]) -> ParseResult:
    """Validate the ``Members`` of an RPC answer or event, refusing bad ones one by one."""
    result = ParseResult()
    for item in raw:
        try:
            result.members.append(decode_member(item))
        except InvalidMember as exc:
            result.refused.append(str(exc))
    return result


def is_join_log(body: Mapping[str, Any]) -> bool:
    """Whether a record of next_event() is the agent's log line of a member's join."""
    line = body.get("Log")
    return isinstance(line, str) and JOIN_LOG.match(line) is not None


def decode_event(body: Mapping[str, Any]) -> Event:
    """One streamed event; raises :class:`InvalidEvent` for anything that is not one."""
    name = body.get("Event")
    if not isinstance(name, str) or name not in MEMBER_EVENTS | OTHER_EVENTS:
        raise InvalidEvent(f"event {str(name)[:40]!r} from the Serf stream: not a Serf event")
    user_event = body.get("Name") if name == "user" else ""
    raw = body.get("Members") if name in MEMBER_EVENTS else []
    if isinstance(raw, list):
        members = decode_members(raw)
    else:
        members = ParseResult(refused=[f"{name} event without a member list"])
    return Event(name, user_event if isinstance(user_event, str) else "", members)
