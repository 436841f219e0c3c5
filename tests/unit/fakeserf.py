"""A fake Serf agent speaking the RPC protocol (msgpack over TCP) from a thread."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import threading
from types import TracebackType
from typing import Any

import msgpack


def rpc_member(
    name: str,
    addr: str,
    *,
    role: str = "backend",
    port: str | int | None = "3000",
    status: str = "alive",
    tags: Any = None,
) -> dict[str, Any]:
    """A member record as Serf's RPC gives it; ``addr``: ``ip`` or ``ip:port``, ``[ip6]:port``.

    The address is encoded as Serf does, 16 bytes (IPv4-mapped for IPv4).
    """
    if addr.startswith("["):
        host = addr[1:].partition("]")[0]
    else:
        host = addr.partition(":")[0] if addr.count(":") == 1 else addr
    ip = ipaddress.ip_address(host)
    packed = (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip).packed
    if tags is None:
        tags = {"role": role} | ({"port": str(port)} if port is not None else {})
    return {"Name": name, "Addr": packed, "Port": 7946, "Tags": tags, "Status": status}


# The commands the fake answers; all but "members" have a body.
COMMANDS = {
    "handshake",
    "auth",
    "members",
    "stream",
    "monitor",
    "join",
    "force-leave",
}


def record(seq: int, body: dict[str, Any]) -> bytes:
    """One record of a stream or a monitor, as Serf sends it: a header, then the body."""
    return bytes(msgpack.packb({"Seq": seq, "Error": ""}) + msgpack.packb(body))


class FakeSerfAgent:
    """Answers handshake, auth, members, stream, monitor, join and force-leave; ``push()``
    sends an event to streams, ``log()`` a log line to monitors."""

    def __init__(self, auth: str = "token") -> None:
        self.auth = auth
        self.members: list[dict[str, Any]] = []
        self.commands: list[str] = []
        self.streams: list[tuple[socket.socket, int]] = []
        self.monitors: list[tuple[socket.socket, int]] = []
        self.joins: list[dict[str, Any]] = []  # bodies of "join" requests
        self.backlog: list[str] = []  # log lines a new monitor is sent first, as Serf does
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def serve(self, sock: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        bodies = COMMANDS - {"members"}
        pending: str | None = None
        seq = 0
        while data := sock.recv(65536):
            unpacker.feed(data)
            for obj in unpacker:
                if pending is not None:  # obj: the body of the pending command
                    self.answer(sock, pending, seq, obj)
                    pending = None
                    continue
                with self.lock:
                    self.commands.append(obj["Command"])
                if obj["Command"] in bodies:
                    pending, seq = obj["Command"], obj["Seq"]
                else:
                    self.answer(sock, obj["Command"], obj["Seq"], None)

    def answer(self, sock: socket.socket, command: str, seq: int, body: Any) -> None:
        error = ""
        if command == "auth" and body.get("AuthKey") != self.auth:
            error = "Invalid authentication token"
        if command == "force-leave":  # as Serf: the member is left, whatever it was
            with self.lock:
                for member in self.members:
                    if member["Name"] == body.get("Node"):
                        member["Status"] = "left"
        if command not in COMMANDS:
            error = f"Unsupported command: {command}"
        if command == "join":
            with self.lock:
                self.joins.append(body)
        out = msgpack.packb({"Seq": seq, "Error": error})
        if command == "members" and not error:
            out += msgpack.packb({"Members": self.members})
        if command == "join" and not error:
            out += msgpack.packb({"Num": len(body.get("Existing", []))})
        if command == "stream" and not error:
            with self.lock:  # registered before the client learns it is streaming
                self.streams.append((sock, seq))
        if command == "monitor" and not error:
            with self.lock:
                self.monitors.append((sock, seq))
                out += b"".join(record(seq, {"Log": line}) for line in self.backlog)
        sock.sendall(out)

    def log(self, line: str) -> None:
        """A line of the agent's log, sent to every monitor."""
        with self.lock:
            for sock, seq in self.monitors:
                sock.sendall(record(seq, {"Log": line}))

    def push(self, event: dict[str, Any]) -> None:
        with self.lock:
            for sock, seq in self.streams:
                sock.sendall(record(seq, event))

    def __enter__(self) -> FakeSerfAgent:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self.lock:
            for sock, _ in self.streams:
                with contextlib.suppress(OSError):  # wakes the thread blocked in recv
                    sock.shutdown(socket.SHUT_RDWR)
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
