"""``lbcluster-handler``: the command line of the membership handler.

Commands:
  lbcluster-handler serve     the service: handle the events the local Serf agent
                              streams over RPC as they come, and reconcile with the
                              live membership every few seconds (Serf drops a member
                              event when a member joins and leaves within its
                              coalescing window); see daemon.py
  lbcluster-handler [event]   handle one Serf event (SERF_EVENT + stdin), as the lab's
                              Serf event handler script would
  lbcluster-handler render    re-render from the live membership (after a settings change)
  lbcluster-handler reconcile apply the live membership once, quietly
  lbcluster-handler boot      before HAProxy starts: render from /nodes, never reload
  lbcluster-handler ready [--timeout S]
                              wait until this container's HAProxy serves (a worker holds
                              the listeners, a server of /nodes is UP): the balancer
                              role's handover waits for it before the old balancer stops
  lbcluster-handler forget NAME...
                              members removed on purpose (the webapp role's scale-down):
                              Serf marks them left now (force-leave) and stops trying
                              to reconnect, even when their own leave did not reach
                              this agent before their death did
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from . import STARTED, haproxy
from .daemon import Daemon
from .events import MAX_STDIN, MEMBER_EVENTS, OTHER_EVENTS, InvalidEvent, script_event
from .handler import FAILURES, Handler, backend_name
from .journal import EventLog, exclusive, update_state
from .members import InvalidMember, validate_name
from .nodes import read_nodes
from .paths import Paths, local_addresses
from .secretfiles import SecretUnavailable, rpc_token
from .serfrpc import Agent, SerfUnavailable

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbcluster-handler", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="event",
        choices=["event", "serve", "render", "reconcile", "boot", "forget", "ready"],
    )
    parser.add_argument("names", nargs="*", help="forget: the members removed on purpose")
    parser.add_argument("--timeout", type=float, default=30.0, help="ready: seconds to wait")
    args = parser.parse_args(argv)
    paths = Paths.from_env()
    if args.command == "ready":
        return ready(paths, args.timeout)
    return run(args, paths, stdin)


def run(args: argparse.Namespace, paths: Paths, stdin: TextIO | None) -> int:
    """The commands that follow the membership (all but ``ready``)."""
    serve = args.command == "serve"
    # The service's output is its log already (see etc/s6/handler/log).
    log = (
        EventLog(paths.event_log, prefix="")
        if serve
        else EventLog(paths.event_log, os.environ.get("LBCLUSTER_CONSOLE"))
    )
    name = os.environ.get("SERF_EVENT", "")
    if args.command == "event" and name not in MEMBER_EVENTS | OTHER_EVENTS:
        shown = repr(name[:40]) if name else "nothing"
        log(f"error: SERF_EVENT is {shown}: not a Serf event; nothing changed")
        update_state(paths.state, errors_inc=1, last_error=f"unknown event {shown}")
        return EXIT_USAGE
    try:
        # boot renders from /nodes and never asks the agent: no token needed.
        auth = "" if args.command == "boot" else rpc_token(paths.secrets_dir)
    except SecretUnavailable as exc:
        log(f"error: {exc}; the last good configuration keeps serving")
        update_state(paths.state, errors_inc=1, last_error=str(exc), last_error_at=time.time())
        return EXIT_ERROR
    agent = Agent(paths.serf_rpc_addr, auth)
    if args.command == "forget":
        return forget(agent, args.names, log)
    handler = Handler(paths, log, agent.members, local_addresses(), agent.join)
    if serve:
        seconds = float(os.environ.get("LBCLUSTER_RECONCILE_SECONDS", "1"))
        Daemon(handler, paths, log, auth, seconds).run()
        return EXIT_OK  # not reached: the service runs until s6 stops it
    try:
        with exclusive(paths.lock):
            if args.command == "boot":
                handler.boot()
            elif args.command == "render":
                handler.render()
            elif args.command == "reconcile":
                handler.reconcile()
            else:
                text = (stdin or sys.stdin).read(MAX_STDIN + 1)
                user_event = os.environ.get("SERF_USER_EVENT", "")
                handler.handle(script_event(name, user_event, text), STARTED)
    except (*FAILURES, InvalidEvent) as exc:
        handler.failed(exc)
        return EXIT_ERROR
    finally:
        agent.close()
    return EXIT_OK


def ready(paths: Paths, timeout: float) -> int:
    """Exit 0 once this container's HAProxy serves, 1 (saying why) after ``timeout``."""
    recorded, _ = read_nodes(paths.nodes_dir)
    try:
        settings = json.loads(paths.settings.read_text(encoding="utf-8"))
        waited = haproxy.wait_serving(
            paths.master_socket, backend_name(settings), bool(recorded), timeout
        )
    except (OSError, ValueError, haproxy.NotServing) as exc:
        print(f"lbcluster-handler ready: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"serving after {waited:.1f} s ({len(recorded)} backends in /nodes)")
    return EXIT_OK


def forget(agent: Agent, names: Sequence[str], log: EventLog) -> int:
    """Tell the local agent that ``names`` left (Serf's force-leave), unless it knows so.

    A stopped backend broadcasts its leave, then dies; when the news of its
    death reaches this agent first, Serf records it failed (member-failed) and
    keeps reconnecting to it for a day. Forcing the leave turns it into a
    member-leave at once. A member still alive refutes it: it is harmless.
    """
    try:
        for name in names:
            validate_name(name)
        known = {m.name: m.status for m in agent.members().members}
        for name in names:
            status = known.get(name)
            if status is None or status == "left":
                log(f"forget: {name} is {status or 'unknown'} to Serf already")
                continue
            agent.force_leave(name)
            log(f"forget: {name} was {status}; Serf now records that it left")
    except (InvalidMember, SerfUnavailable) as exc:
        log(f"error: forget: {exc}")
        return EXIT_ERROR
    finally:
        agent.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
