"""``lbcluster-handler serve``: the membership handler as a long-running service.

It subscribes to the local Serf agent's event stream over RPC, so an event
is handled the moment it arrives: no process is forked, nothing is imported
again, the membership is read over an open connection. On the same
connection it follows the agent's log for one line: a member joined (Serf
logs it at once, its member-join event comes a second or more later, once
Serf's coalescing lets it through), which makes it read the membership
now. Between events it reconciles every few seconds (level-triggered: a
change Serf never announced is still applied), and earlier whenever the
handler says work is due (the file a Runtime API change left for later,
the consolidating reload). When the agent goes away (restarted by s6), it
reconnects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .events import JOIN_SEEN, Event, InvalidEvent
from .handler import FAILURES, Handler
from .journal import EventLog, exclusive
from .paths import Paths
from .serfrpc import SerfRPC, SerfUnavailable, decode_event, is_join_log

RETRY_S = 1.0
# After an event, the membership is read again this soon: gossip may bring
# the member itself a moment after its event.
FOLLOW_UP_S = 0.25
# Joins seen in the agent's log make the membership be read at most this
# often; one seen sooner is left to a reconcile at the end of the gap (when
# its stream connects, Serf first sends the hundreds of lines it kept).
HINT_GAP_S = 0.05


class Daemon:
    def __init__(
        self, handler: Handler, paths: Paths, log: EventLog, auth: str, reconcile_s: float
    ) -> None:
        self.handler = handler
        self.paths = paths
        self.log = log
        self.auth = auth
        self.reconcile_s = reconcile_s
        self.next_reconcile = time.monotonic()
        self.last_hint = -float("inf")
        self.stopping = threading.Event()  # for tests: run() returns once set

    def guarded(self, action: Callable[[], None]) -> None:
        """Run one step under the handler lock; its failure is logged, never fatal."""
        try:
            with exclusive(self.paths.lock):
                action()
        except FAILURES as exc:
            self.handler.failed(exc)
        else:
            self.handler.succeeded()

    def handle(self, body: dict[str, object], received: float) -> None:
        """One message of the stream: a Serf event, or refused."""
        try:
            event = decode_event(body)
        except InvalidEvent as exc:
            self.handler.refuse([str(exc)])
            return
        self.handler.handle(event, received, defer_file=True)

    def join_seen(self, received: float) -> None:
        """The agent logged a member's join: read the live membership now, or at the
        end of the gap after the last time it was read for this."""
        if received - self.last_hint < HINT_GAP_S:
            self.next_reconcile = min(self.next_reconcile, self.last_hint + HINT_GAP_S)
            return
        self.last_hint = received
        self.guarded(lambda: self.handler.handle(Event(JOIN_SEEN), received, defer_file=True))
        self.next_reconcile = min(self.next_reconcile, time.monotonic() + FOLLOW_UP_S)

    def step(self, stream: SerfRPC) -> bool:
        """Wait for an event until work is due; handle it, then what is due.

        Returns whether an event (or a log line) came.
        """
        due = min(t for t in (self.next_reconcile, self.handler.next_due()) if t is not None)
        body = stream.next_event(max(0.01, min(1.0, due - time.monotonic())))
        if body is not None and "Log" in body:
            if is_join_log(body):
                self.join_seen(time.monotonic())
        elif body is not None:
            received = time.monotonic()
            self.guarded(lambda: self.handle(body, received))
            self.next_reconcile = min(self.next_reconcile, time.monotonic() + FOLLOW_UP_S)
        now, handler_due = time.monotonic(), self.handler.next_due()
        if now >= self.next_reconcile or (handler_due is not None and now >= handler_due):
            self.guarded(self.handler.reconcile)
            self.next_reconcile = time.monotonic() + self.reconcile_s
        return body is not None

    def run(self) -> None:
        """Until stopped: connect, watch, reconnect after a pause when the agent goes away."""
        reported = ""
        while not self.stopping.is_set():
            try:
                with SerfRPC(self.paths.serf_rpc_addr, self.auth) as stream:
                    stream.subscribe(log=True)
                    self.log(f"serf: watching the agent's events at {self.paths.serf_rpc_addr}")
                    reported = ""
                    self.next_reconcile = time.monotonic()
                    while not self.stopping.is_set():
                        self.step(stream)
            except SerfUnavailable as exc:
                if str(exc) != reported:  # once per outage, not once per retry
                    self.log(f"serf: {exc}; retrying every {RETRY_S:.0f} s")
                    reported = str(exc)
            self.stopping.wait(RETRY_S)
