"""Fake HAProxy CLI sockets (admin and master) served from a thread, for unit tests."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

SHOW_PROC_26 = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
1               master          {reloads} [failed: {failed}]   0d00h00m05s     2.6.12
# workers
{worker}               worker          0               0d00h00m05s     2.6.12
# old workers
{old}               worker          1               0d00h01m00s     2.6.12
# programs

"""


class FakeSocket:
    """A unix socket answering each command (read until EOF) with ``respond(command)``."""

    def __init__(self, path: Path, respond: Callable[[str], str]) -> None:
        self.path = path
        self.commands: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                command = self.rfile.read().decode().strip()
                outer.commands.append(command)
                answer = respond(command)
                if answer:
                    self.wfile.write(answer.encode())

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> FakeSocket:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class FakeMaster:
    """The master CLI of HAProxy 2.6: ``show proc`` and ``reload`` (answered with nothing).

    ``outcome`` says what a reload does: "ok" (new worker, reload counter +1),
    "failed" (failure counter +1, same worker) or "stuck" (nothing changes).
    """

    def __init__(self, outcome: str = "ok") -> None:
        self.outcome = outcome
        self.reloads = 0
        self.failed = 0
        self.worker = 100
        self.old = 50

    def __call__(self, command: str) -> str:
        if command == "show proc":
            return SHOW_PROC_26.format(
                reloads=self.reloads, failed=self.failed, worker=self.worker, old=self.old
            )
        if command == "reload":
            if self.outcome == "ok":
                self.reloads += 1
                self.old, self.worker = self.worker, self.worker + 1
            elif self.outcome == "failed":
                self.failed += 1
            return ""
        return f"Unknown command: '{command}'\n"


class FakeAdmin:
    """HAProxy's admin socket for the servers of one backend, as the Runtime API sees them.

    ``servers`` maps a name to ``[address:port, status]``. ``busy`` names
    servers that still have connections (``del server`` refuses them);
    ``refuse`` is a command prefix answered with an error.
    """

    HEADER = "# pxname,svname,status,addr,scur,stot,check_status,lastchg,"

    def __init__(self, servers: dict[str, str] | None = None, backend: str = "nodes") -> None:
        self.backend = backend
        self.servers = {n: [a, "UP"] for n, a in (servers or {}).items()}
        self.busy: set[str] = set()
        self.refuse = ""

    def __call__(self, command: str) -> str:  # noqa: PLR0911 - one branch per command
        if self.refuse and command.startswith(self.refuse):
            return "No such backend.\n"
        words = command.split()
        target = words[2] if len(words) > 2 else ""
        name = target.partition("/")[2]
        if command == "show stat":
            rows = [f"{self.backend},{n},{s},{a},0,0,L7OK,1," for n, (a, s) in self.servers.items()]
            return "\n".join([self.HEADER, *rows]) + "\n"
        if words[:2] == ["add", "server"]:
            self.servers[name] = [words[3], "MAINT"]
            return "New server registered.\n"
        if words[:2] == ["enable", "server"] or command.endswith("state ready"):
            self.servers[name][1] = "UP"
            return ""
        if words[:2] == ["enable", "health"]:
            return ""
        if command.endswith("state maint"):
            self.servers[name][1] = "MAINT"
            return ""
        if words[:2] == ["del", "server"]:
            if name not in self.servers:
                return "No such server.\n"
            if name in self.busy:
                return "Server still has connections attached to it, cannot remove it.\n"
            del self.servers[name]
            return "Server deleted.\n"
        return f"Unknown command: '{command}'\n"
