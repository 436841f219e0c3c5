"""The membership handler of the balancer.

For a member event it logs the event, reads the *live* membership from the
local agent (the truth, not a replay of events) and makes HAProxy serve the
alive backends: through the Runtime API when servers only come and go,
else by a seamless reload. It renders haproxy.cfg from the shared template,
validates it with ``haproxy -c``, installs it and records the backends under
/nodes. Any failure leaves the last good configuration serving and is logged
with its reason.

Commands:
  lbcluster-handler serve     the service: handle the events the local Serf agent
                              streams over RPC as they come, and reconcile with the
                              live membership every few seconds (Serf drops a member
                              event when a member joins and leaves within its
                              coalescing window); see daemon.py
  lbcluster-handler           handle one Serf event (SERF_EVENT + stdin), as a Serf
                              event handler script would
  lbcluster-handler render    re-render from the live membership (after a settings change)
  lbcluster-handler reconcile apply the live membership once, quietly
  lbcluster-handler boot      before HAProxy starts: render from /nodes, never reload
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import STARTED, haproxy
from .members import HINT_EVENT, Member, ParseResult, alive_backends, parse_event_lines
from .nodes import read_nodes, sync_nodes
from .paths import Paths
from .render import SettingsError, TemplateError, load_settings, render_config
from .serfcli import SerfUnavailable, live_members
from .serfrpc import parse_rpc_members

MEMBER_EVENTS = frozenset(
    {"member-join", "member-leave", "member-failed", "member-update", "member-reap"}
)
OTHER_EVENTS = frozenset({"user", "query"})
MAX_STDIN = 4 * 1024 * 1024
# After a Runtime API change, the file is written once events pause this long.
FILE_DELAY_S = 0.3
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class HandlerError(RuntimeError):
    """A failure that keeps the last good configuration in place."""


class EventLog:
    """Appends timestamped lines to /var/log/serf.log, mirrored to the container's log."""

    def __init__(self, path: Path, console: str | None = None, prefix: str = "handler: ") -> None:
        self.path = path
        self.console = console
        self.prefix = prefix  # on stderr (a service's log adds its own)

    def __call__(self, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = f"{stamp} {message}\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            sys.stderr.write(f"lbcluster-handler: cannot write {self.path}: {exc}\n")
        sys.stderr.write(f"{self.prefix}{message}\n")
        if self.console:
            with contextlib.suppress(OSError), open(self.console, "a", encoding="utf-8") as out:
                out.write(f"handler: {message}\n")


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Never two handlers at once (Serf serialises events, but boot/render may race it)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_stdin(stream: TextIO) -> list[str]:
    data = stream.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise HandlerError(f"event input larger than {MAX_STDIN} bytes: refused")
    return data.splitlines()


def update_state(path: Path, **changes: Any) -> None:
    """Counters for status and metrics (events, reloads, refused inputs, last error)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    for key, value in changes.items():
        if key.endswith("_inc"):
            name = key[: -len("_inc")]
            state[name] = int(state.get(name, 0)) + int(value)
        else:
            state[key] = value
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


class Handler:
    def __init__(self, paths: Paths, log: EventLog) -> None:
        self.paths = paths
        self.log = log
        # When the event being handled arrived (None: no event, e.g. reconciling).
        self.started: float | None = STARTED
        # Alive members in the order this handler first saw them (see alive_backends).
        self.joined: dict[str, int] = {}
        self.joins = 0
        # Refusals of the membership standing since the last read (logged once).
        self.refusing: set[str] = set()
        # Servers added through the Runtime API since the last reload, and when
        # the Runtime API last changed something (see consolidate()).
        self.dynamic: set[str] = set()
        self.last_change = 0.0
        # Servers this handler put in maintenance and has not deleted yet.
        self.drained: set[str] = set()
        # When the daemon defers the file after a Runtime API change: write it then.
        self.file_due: float | None = None
        self.members_source: Callable[[], ParseResult] = lambda: live_members(
            self.paths.serf_bin, self.paths.serf_rpc_addr
        )

    def since_event(self) -> str:
        if self.started is None:
            return " (found by reconciling)"
        return f", live {(time.monotonic() - self.started) * 1000:.0f} ms after the event"

    def refuse(self, reasons: Sequence[str], *, once: bool = False) -> None:
        """Log refused inputs; ``once``: a reason still standing since the last call is not
        logged again (the membership is read every second)."""
        new = [r for r in reasons if r not in self.refusing] if once else list(reasons)
        if once:
            self.refusing = set(reasons)
        for reason in new:
            self.log(f"refused: {reason}")
        if new:
            update_state(self.paths.state, refused_inc=len(new))

    def membership(self) -> list[Member]:
        """Alive, valid backends from the local agent, guarding against a transient view."""
        try:
            view = self.members_source()
        except SerfUnavailable as exc:
            raise HandlerError(f"cannot read the live membership: {exc}") from None
        alive = {m.name for m in view.members if m.status == "alive"}
        self.joined = {n: r for n, r in self.joined.items() if n in alive}
        if alive - self.joined.keys():  # first seen together: a tie
            self.joins += 1
            self.joined |= dict.fromkeys(alive - self.joined.keys(), self.joins)
        backends = alive_backends(view.members, self.joined)
        self.refuse(view.refused + backends.refused, once=True)
        others = [m for m in view.members if m.role != "balancer"]
        if not backends.members and not others and not view.refused:
            recorded, _ = read_nodes(self.paths.nodes_dir)
            if recorded:
                # A freshly (re)started agent knows only itself until its join
                # completes: that is not "every backend is gone".
                raise HandlerError(
                    "the local agent knows no other member yet; keeping the last configuration"
                    f" ({len(recorded)} backends)"
                )
        return backends.members

    def runtime_sync(self, backends: list[Member], settings: dict[str, Any]) -> bool:
        """Make HAProxy serve exactly ``backends`` through the Runtime API, without a reload.

        New backends are added; departed ones are put in maintenance at once
        (no new request goes to them) and deleted once their connections are
        gone; one that comes back before that is put back in rotation.
        Returns False (nothing done; the caller reloads) when an address
        changed, sticky sessions are on (``add server`` refuses ``cookie``),
        HAProxy is not running or it refuses a command.
        """
        if settings.get("sticky_sessions") or not self.paths.admin_socket.exists():
            return False
        backend = str(settings.get("backend_name", "nodes"))
        want = {m.name: m.endpoint for m in backends}
        try:
            current = {
                r["svname"]: r for r in haproxy.server_states(self.paths.admin_socket, backend)
            }
            if any(n in current and current[n].get("addr") != e for n, e in want.items()):
                return False
            added = sorted(set(want) - set(current))
            revived = sorted(set(want) & set(current) & self.drained)
            gone = sorted(
                n
                for n in set(current) - set(want)
                if n not in self.drained and not current[n].get("status", "").startswith("MAINT")
            )
            self.drained = (self.drained | (set(current) - set(want))) - set(want)
            options: list[str] = []
            if added:
                options = haproxy.default_server_options(
                    self.paths.live_config.read_text(encoding="utf-8")
                )
            for name in added:
                haproxy.runtime_add_server(
                    self.paths.admin_socket, backend, name, want[name], options
                )
                self.dynamic.add(name)
            for name in revived:
                haproxy.runtime_set_state(self.paths.admin_socket, backend, name, "ready")
            for name in gone:
                haproxy.runtime_set_state(self.paths.admin_socket, backend, name, "maint")
            self.delete_drained(backend)
        except (OSError, haproxy.RuntimeCommandFailed) as exc:
            self.log(f"runtime: {exc}; falling back to a reload")
            return False
        changes = [
            f"{label} {', '.join(names)}"
            for label, names in (("added", added), ("re-enabled", revived), ("removed", gone))
            if names
        ]
        self.dynamic -= set(gone)
        if changes:
            self.last_change = time.monotonic()
            self.log(f"runtime: {'; '.join(changes)} without a reload{self.since_event()}")
            update_state(
                self.paths.state,
                runtime_adds_inc=len(added) + len(revived),
                runtime_removals_inc=len(gone),
                last_reload=time.time(),
            )
        return True

    def delete_drained(self, backend: str) -> None:
        """Delete the servers put in maintenance whose connections are gone (else: later)."""
        for name in sorted(self.drained):
            if haproxy.runtime_del_server(self.paths.admin_socket, backend, name):
                self.drained.discard(name)

    def record_nodes(self, backends: list[Member], previous: str | None) -> None:
        """/nodes follows the configuration that was accepted: both always agree.

        If /nodes cannot be written, the configuration that is still running
        is put back (``previous``: see haproxy.install_config).
        """
        try:
            sync = sync_nodes(self.paths.nodes_dir, backends)
        except OSError as exc:
            if previous is not None:
                haproxy.restore_config(previous, self.paths.live_config)
            raise HandlerError(
                f"cannot record the members under {self.paths.nodes_dir}: {exc}"
            ) from None
        if sync.changed:
            self.log(
                "nodes: "
                + ", ".join(
                    f"{label} {','.join(names)}"
                    for label, names in (
                        ("added", sync.added),
                        ("updated", sync.updated),
                        ("removed", sync.removed),
                    )
                    if names
                )
            )

    def apply(
        self,
        backends: list[Member],
        *,
        reload: bool = True,
        fast: bool = True,
        quiet: bool = False,
        defer_file: bool = False,
    ) -> None:
        """Make HAProxy, haproxy.cfg and /nodes follow ``backends``.

        Through the Runtime API when it can (``fast``), else by a validated
        reload. ``defer_file``: after a Runtime API change, leave writing the
        file and /nodes to a later ``apply`` (the daemon's, once events pause),
        so a burst of joins costs one ``haproxy -c``, not one per event.
        """
        try:
            settings = load_settings(self.paths.settings)
        except SettingsError as exc:
            raise HandlerError(str(exc)) from None
        if reload and fast and self.runtime_sync(backends, settings):
            # Live already; the file follows (validated), so a later reload keeps them.
            reload = False
            if defer_file:
                if self.file_due is None:
                    self.file_due = time.monotonic() + FILE_DELAY_S
                return
        self.file_due = None
        try:
            text = render_config(self.paths.template, settings, backends)
        except TemplateError as exc:
            raise HandlerError(str(exc)) from None
        names = ", ".join(m.name for m in backends) or "none"
        try:
            previous = haproxy.install_config(text, self.paths.live_config, self.paths.haproxy_bin)
        except haproxy.ConfigInvalid as exc:
            raise HandlerError(str(exc)) from None
        except OSError as exc:
            raise HandlerError(f"cannot write {self.paths.live_config}: {exc}") from None
        self.record_nodes(backends, previous)
        if previous is None:
            if not quiet:
                self.log(f"config: unchanged ({len(backends)} servers: {names}), no reload")
            return
        if not reload:
            self.log(f"config: written ({len(backends)} servers: {names})")
            return
        if not self.paths.master_socket.exists():
            self.log("config: written; HAProxy is not running, it loads it when it starts")
            return
        self.reload(backends, previous, self.since_event())

    def reload(self, backends: list[Member], previous: str | None, why: str) -> None:
        """Seamless reload; if it fails, ``previous`` (when given) is put back."""
        started = time.monotonic()
        try:
            proc = haproxy.reload(self.paths.master_socket)
        except (haproxy.ReloadFailed, OSError) as exc:
            if previous is not None:
                haproxy.restore_config(previous, self.paths.live_config)
            raise HandlerError(f"reload failed: {exc}") from None
        elapsed = time.monotonic() - started
        # The new worker has exactly the servers of the file.
        self.drained.clear()
        self.dynamic.clear()
        update_state(
            self.paths.state,
            reloads_inc=1,
            last_reload=time.time(),
            last_servers=[m.name for m in backends],
        )
        names = ", ".join(m.name for m in backends) or "none"
        self.log(
            f"config: reloaded in {elapsed * 1000:.0f} ms{why}"
            f" ({len(backends)} servers: {names};"
            f" worker {','.join(map(str, proc.workers))})"
        )

    def consolidate(self) -> None:
        """Reload, once quiet, to turn servers added through the Runtime API into
        servers of the file.

        HAProxy 2.6 reuses no connection to a server added at runtime: every
        request opens a new one, which halves what the app can serve. After a
        reload, idle connections are reused again.
        """
        if not self.dynamic or not self.paths.master_socket.exists():
            return
        self.started = None
        backends = self.membership()
        self.apply(backends, quiet=True)  # the file follows first (validated)
        if self.dynamic:
            added = ", ".join(sorted(self.dynamic))
            self.reload(backends, None, f" to make {added} servers of the file (connection reuse)")

    def event(self, name: str, lines: list[str]) -> None:
        """One Serf event: ``lines`` as Serf gives a handler's stdin."""
        self.handle(name, os.environ.get("SERF_USER_EVENT", ""), parse_event_lines(lines))

    def stream_event(self, body: dict[str, Any]) -> None:
        """One event as the agent's RPC stream gives it (the daemon's path)."""
        name = body.get("Event")
        if not isinstance(name, str) or name not in MEMBER_EVENTS | OTHER_EVENTS:
            self.refuse([f"event {str(name)[:40]!r} from the Serf stream: not a Serf event"])
            return
        user_event = body.get("Name") if name == "user" else ""
        raw = body.get("Members") if name in MEMBER_EVENTS else []
        if not isinstance(raw, list):
            self.refuse([f"{name} event without a member list"])
            raw = []
        self.handle(
            name,
            user_event if isinstance(user_event, str) else "",
            parse_rpc_members(raw),
            defer_file=True,
        )

    def handle(
        self, name: str, user_event: str, parsed: ParseResult, *, defer_file: bool = False
    ) -> None:
        update_state(self.paths.state, events_inc=1, last_event=name, last_event_at=time.time())
        if name == "user" and user_event == HINT_EVENT:
            # A member just joined: read the live membership now rather than
            # after Serf's coalescing delay (the hint itself is not trusted).
            self.log("user: join hint, reading the live membership")
            self.apply(self.membership(), defer_file=defer_file)
            return
        if name in OTHER_EVENTS:
            self.log(f"{name}: ignored (not a membership event)")
            return
        for member in parsed.members:
            self.log(f"{name}: {member.describe()}")
        self.refuse(parsed.refused)
        self.apply(self.membership(), defer_file=defer_file)

    def boot(self) -> None:
        """Before HAProxy starts: render from /nodes; fall back to Ansible's bootstrap config."""
        recorded, problems = read_nodes(self.paths.nodes_dir)
        self.refuse(problems)
        try:
            self.apply(alive_backends(recorded).members, reload=False)
        except HandlerError as exc:
            self.log(f"boot: {exc}; starting from the bootstrap config")
            boot_text = self.paths.bootstrap_config.read_text(encoding="utf-8")
            haproxy.install_config(boot_text, self.paths.live_config, self.paths.haproxy_bin)


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbcluster-handler", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="event",
        choices=["event", "serve", "render", "reconcile", "boot"],
    )
    args = parser.parse_args(argv)
    paths = Paths.from_env()
    log = EventLog(paths.event_log, os.environ.get("LBCLUSTER_CONSOLE"))
    handler = Handler(paths, log)
    if args.command == "serve":
        from .daemon import Daemon  # noqa: PLC0415 - only the service needs it

        # Its output is the handler service's log already (see etc/s6/handler/log).
        log = EventLog(paths.event_log, prefix="")
        handler = Handler(paths, log)

        seconds = float(os.environ.get("LBCLUSTER_RECONCILE_SECONDS", "1"))
        Daemon(handler, paths, log, os.environ.get("SERF_RPC_AUTH", ""), seconds).run()
        return EXIT_OK  # not reached: the service runs until s6 stops it
    event = os.environ.get("SERF_EVENT", "")
    try:
        with exclusive(paths.lock):
            if args.command == "boot":
                handler.boot()
            elif args.command == "render":  # settings changed: always a full reload
                handler.apply(handler.membership(), fast=False)
            elif args.command == "reconcile":  # periodic: catches events Serf suppressed
                handler.apply(handler.membership(), quiet=True)
            elif event in MEMBER_EVENTS or event in OTHER_EVENTS:
                handler.event(event, read_stdin(stdin or sys.stdin))
            else:
                shown = repr(event[:40]) if event else "nothing"
                log(f"error: SERF_EVENT is {shown}: not a Serf event; nothing changed")
                update_state(paths.state, errors_inc=1, last_error=f"unknown event {shown}")
                return EXIT_USAGE
    except (HandlerError, haproxy.ConfigInvalid, OSError) as exc:
        log(f"error: {exc}; the last good configuration keeps serving")
        update_state(paths.state, errors_inc=1, last_error=str(exc), last_error_at=time.time())
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
