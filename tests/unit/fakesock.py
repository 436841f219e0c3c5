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
