"""``lbcluster-handler serve``: the membership handler as a long-running service.

It subscribes to the local Serf agent's event stream over RPC, so an event
is handled the moment it arrives: no process is forked, nothing is imported
again, the membership is read over an open connection. Between events it
reconciles every few seconds (level-triggered: a change Serf never announced
is still applied) and writes the file that a Runtime API change left for
later. When the agent goes away (restarted by s6), it reconnects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import haproxy
from .serfcli import SerfUnavailable
from .serfrpc import SerfRPC

if TYPE_CHECKING:
    from .handler import EventLog, Handler
    from .paths import Paths

RETRY_S = 1.0
# Servers added through the Runtime API become servers of the file by a
# reload once the membership has not changed for this long (Handler.consolidate).
CONSOLIDATE_S = 2.0
# After an event, the membership is read again this soon.
FOLLOW_UP_S = 0.25


class Daemon:
    def __init__(
        self, handler: Handler, paths: Paths, log: EventLog, auth: str, reconcile_s: float
    ) -> None:
        self.handler = handler
        self.paths = paths
        self.log = log
        self.auth = auth
        self.reconcile_s = reconcile_s
        self.stopping = threading.Event()  # for tests: run() returns once set

    def guarded(self, action: Callable[[], None]) -> None:
        """Run one step under the handler lock; its failure is logged, never fatal."""
        from .handler import HandlerError, exclusive, update_state  # noqa: PLC0415 - cycle

        try:
            with exclusive(self.paths.lock):
                action()
        except (HandlerError, haproxy.ConfigInvalid, OSError) as exc:
            self.log(f"error: {exc}; the last good configuration keeps serving")
            update_state(
                self.paths.state, errors_inc=1, last_error=str(exc), last_error_at=time.time()
            )

    def reconcile(self) -> None:
        self.handler.started = None
        self.handler.apply(self.handler.membership(), quiet=True)

    def watch(self, stream: SerfRPC, query: SerfRPC) -> None:
        """Handle events as they come, until the agent's connection breaks."""
        handler = self.handler
        handler.members_source = query.members
        next_reconcile = time.monotonic()
        while not self.stopping.is_set():
            consolidate_due = handler.last_change + CONSOLIDATE_S if handler.dynamic else None
            due = min(t for t in (next_reconcile, handler.file_due, consolidate_due) if t)
            event = stream.next_event(max(0.01, min(1.0, due - time.monotonic())))
            if event is not None:
                handler.started = time.monotonic()
                self.guarded(lambda e=event: handler.stream_event(e))  # type: ignore[misc]
                # Gossip may bring the member itself a moment after its event
                # (a join hint can outrun it): look again shortly.
                next_reconcile = min(next_reconcile, time.monotonic() + FOLLOW_UP_S)
            now = time.monotonic()
            if consolidate_due is not None and now >= consolidate_due:
                self.guarded(handler.consolidate)
            if now >= next_reconcile or (handler.file_due is not None and now >= handler.file_due):
                self.guarded(self.reconcile)
                next_reconcile = time.monotonic() + self.reconcile_s

    def run(self) -> None:
        """Until stopped: connect, watch, reconnect after a pause when the agent goes away."""
        reported = ""
        while not self.stopping.is_set():
            try:
                with (
                    SerfRPC(self.paths.serf_rpc_addr, self.auth) as stream,
                    SerfRPC(self.paths.serf_rpc_addr, self.auth) as query,
                ):
                    stream.subscribe()
                    self.log(f"serf: watching the agent's events at {self.paths.serf_rpc_addr}")
                    reported = ""
                    self.watch(stream, query)
            except SerfUnavailable as exc:
                if str(exc) != reported:  # once per outage, not once per retry
                    self.log(f"serf: {exc}; retrying every {RETRY_S:.0f} s")
                    reported = str(exc)
            self.stopping.wait(RETRY_S)
