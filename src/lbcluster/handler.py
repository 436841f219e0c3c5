"""The membership handler: HAProxy, haproxy.cfg and /nodes follow the live membership.

For an event (or when something is due) it reads the *live* membership from
the local agent, the truth rather than a replay of events, asks the planner
(plan.py) what to change and carries the plan out: Runtime API commands,
then the file rendered from the shared template (validated with ``haproxy
-c``, installed atomically, /nodes recorded with it), then a seamless reload
when the file carries the change. Any failure raises :class:`HandlerError`;
the last good configuration keeps serving.

The command line is cli.py; the service loop that feeds it events is daemon.py.
Its ~320 lines are one job, carrying out a plan, and stay together: what is
decided is in plan.py, the Runtime API commands in runtime.py, rendering in
render.py, the file's installation in haproxy.py, /nodes in nodes.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from . import haproxy, runtime
from .events import OTHER_EVENTS, Event
from .journal import EventLog, listing, update_state
from .members import (
    AddressPolicy,
    JoinOrder,
    Member,
    ParseResult,
    alive_backends,
)
from .nodes import read_nodes, sync_nodes
from .paths import Paths
from .plan import Plan, Server, plan
from .render import SettingsError, TemplateError, load_settings, render_config
from .serfrpc import SerfUnavailable


class HandlerError(RuntimeError):
    """A failure that keeps the last good configuration in place."""


# What a step may fail with: logged and counted, never fatal to the service.
FAILURES = (HandlerError, haproxy.ConfigInvalid, OSError)
# How apply() may change HAProxy (see there).
LIVE, RELOAD, BOOT = "live", "reload", "boot"
# Where a backend's agent listens (the webapp image's static Serf configuration).
BACKEND_SERF_PORT = 7946
# A balancer's agent alone asks to join this many of the recorded backends at
# a time: one exchange with any of them brings the whole membership. When
# none answered (each may take Serf's TCP timeout, the handler waits), the
# next ones are asked this much later.
REJOIN_SAMPLE = 3
REJOIN_BACKOFF_S = 10.0


def since(received: float | None) -> str:
    if received is None:
        return " (found by reconciling)"
    return f", live {(time.monotonic() - received) * 1000:.0f} ms after the event"


class Handler:
    """Carries out plans; keeps what one plan leaves to the next (``pending``)."""

    def __init__(
        self,
        paths: Paths,
        log: EventLog,
        members: Callable[[], ParseResult],
        own: frozenset[str] = frozenset(),
        join: Callable[[list[str]], int] | None = None,
    ) -> None:
        self.paths = paths
        self.log = log
        self.read_members = members
        self.own = own  # the balancer's own addresses: never a server
        self.join = join  # asks the local agent to join these ip:port; how many answered
        self.rejoins = 0  # joins asked since the agent was last seen with other members
        self.next_rejoin = 0.0
        self.order = JoinOrder()
        self.pending = Plan().pending
        # Refusals of the membership standing since the last read (logged once).
        self.refusing: set[str] = set()
        # The failure logged last, while no step has succeeded since (logged once).
        self.standing: str | None = None

    def next_due(self) -> float | None:
        """When work is due although no event comes (the deferred file, consolidation)."""
        return self.pending.next_due()

    # --- what starts a step ---------------------------------------------------

    def handle(self, event: Event, received: float | None, *, defer_file: bool = False) -> None:
        """One Serf event; ``defer_file``: see plan()."""
        update_state(
            self.paths.state, events_inc=1, last_event=event.name, last_event_at=time.time()
        )
        if event.is_hint:
            # A member just joined: read the live membership now rather than
            # after Serf's coalescing delay (the hint itself is not trusted).
            self.log("join-seen: the agent saw a member join, reading the live membership")
        elif event.name in OTHER_EVENTS:
            self.log(f"{event.name}: ignored (not a membership event)")
            return
        else:
            for member in event.members.members:
                self.log(f"{event.name}: {member.describe()}")
        self.refuse(event.members.refused)
        self.apply(self.membership(), received=received, defer_file=defer_file)

    def reconcile(self) -> None:
        """Apply the live membership quietly: catches what Serf never announced."""
        self.apply(self.membership(), quiet=True)

    def render(self) -> None:
        """After a settings change: the file carries it, so always a validated reload."""
        self.apply(self.membership(), mode=RELOAD)

    def boot(self) -> None:
        """Before HAProxy starts: render from /nodes; fall back to Ansible's bootstrap config."""
        recorded, problems = read_nodes(self.paths.nodes_dir)
        self.refuse(problems)
        try:
            self.apply(alive_backends(recorded).members, mode=BOOT)
        except HandlerError as exc:
            self.log(f"boot: {exc}; starting from the bootstrap config")
            boot_text = self.paths.bootstrap_config.read_text(encoding="utf-8")
            haproxy.install_config(boot_text, self.paths.live_config, self.paths.haproxy_bin)

    def failed(self, exc: BaseException) -> None:
        """Log and count a failed step, once while it stands: the same failure again,
        with no success between (a rejected rendering reconciled every few seconds, a
        new balancer's agent alone until the backends join it), is not logged again."""
        if str(exc) == self.standing:
            return
        self.standing = str(exc)
        self.log(f"error: {exc}; the last good configuration keeps serving")
        update_state(self.paths.state, errors_inc=1, last_error=str(exc), last_error_at=time.time())

    def succeeded(self) -> None:
        """A step went through: the next failure is news again."""
        self.standing = None

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

    # --- the membership -------------------------------------------------------

    def membership(self) -> list[Member]:
        """Alive, valid backends from the local agent, guarding against a transient view."""
        try:
            view = self.read_members()
        except SerfUnavailable as exc:
            raise HandlerError(f"cannot read the live membership: {exc}") from None
        ranks = self.order.update(m.name for m in view.members if m.status == "alive")
        backends = alive_backends(view.members, ranks, self.address_policy())
        self.refuse(view.refused + backends.refused, once=True)
        others = [m for m in view.members if m.role != "balancer"]
        if not backends.members and not others and not view.refused:
            recorded, _ = read_nodes(self.paths.nodes_dir)
            if recorded:
                # A freshly (re)started agent knows only itself until its join
                # completes: that is not "every backend is gone".
                self.rejoin(recorded)
                raise HandlerError(
                    "the local agent knows no other member yet; keeping the last configuration"
                    f" ({len(recorded)} backends)"
                )
        self.rejoins, self.next_rejoin = 0, 0.0
        return backends.members

    def rejoin(self, recorded: Sequence[Member]) -> None:
        """Ask the agent, alone, to join a few of the recorded backends, others each time.

        A backend's agent retries only a balancer that failed, never one that
        left: a new balancer container (or one whose agent's state is gone)
        must find the backends itself, from /nodes, which outlives it.
        """
        now = time.monotonic()
        if self.join is None or now < self.next_rejoin:
            return
        start = self.rejoins * REJOIN_SAMPLE % len(recorded)
        sample = [*recorded[start:], *recorded[:start]][:REJOIN_SAMPLE]
        try:
            joined, why = self.join([f"{m.address}:{BACKEND_SERF_PORT}" for m in sample]), ""
        except SerfUnavailable as exc:
            joined, why = 0, f" ({exc})"
        if not joined:
            self.next_rejoin = now + REJOIN_BACKOFF_S
        if self.rejoins == 0 or joined:
            names = ", ".join(m.name for m in sample)
            self.log(f"serf: the agent knows no other member: joined {joined} of {names}{why}")
        self.rejoins += 1

    def address_policy(self) -> AddressPolicy:
        """Only addresses of the cluster's networks (settings ``backend_networks``)."""
        try:
            settings = load_settings(self.paths.settings)
        except SettingsError as exc:
            raise HandlerError(str(exc)) from None
        try:
            return AddressPolicy.from_settings(settings, self.own)
        except ValueError as exc:
            raise HandlerError(f"{self.paths.settings}: backend_networks: {exc}") from None

    # --- carrying out a plan --------------------------------------------------

    def apply(
        self,
        backends: list[Member],
        *,
        received: float | None = None,
        mode: str = LIVE,
        quiet: bool = False,
        defer_file: bool = False,
    ) -> None:
        """Make HAProxy, haproxy.cfg and /nodes follow ``backends``.

        ``mode``: LIVE (the Runtime API when it can, else a reload), RELOAD
        (through the file: settings changed) or BOOT (the file only: HAProxy
        starts after); ``quiet``: an unchanged file is not logged.
        """
        try:
            settings = load_settings(self.paths.settings)
        except SettingsError as exc:
            raise HandlerError(str(exc)) from None
        want = {m.name: m.endpoint for m in backends}
        live = self.live_servers(settings) if mode == LIVE else None
        step = plan(want, live, self.pending, time.monotonic(), defer_file=defer_file)
        self.pending = step.pending
        via_file = step.via_file
        if live is not None and not self.run_runtime(step, want, settings, received):
            via_file = "the Runtime API refused a command"
        if not step.write_file:
            return
        previous, text = self.write_file(backends, settings, quiet=quiet)
        settings_changed = bool(
            mode == LIVE
            and not via_file
            and previous
            and haproxy.differs_beyond_servers(previous, text)
        )
        if settings_changed:
            # Only the servers change live; anything else in the file (new
            # settings, which this pass may find before `render` runs) is loaded
            # by a reload, whoever wrote the file.
            via_file = "the settings changed"
        if mode == BOOT or not (via_file or step.consolidate):
            if previous is not None:
                self.log(f"config: written ({describe(backends)})")
            return
        if via_file and previous is None:
            return  # the file already says so: nothing to reload
        if not self.paths.master_socket.exists():
            if previous is not None:
                self.log("config: written; HAProxy is not running, it loads it when it starts")
            if step.consolidate:  # once HAProxy runs again
                self.pending = replace(self.pending, changed_at=time.monotonic())
            return
        if via_file:
            why = " for new settings" if settings_changed else ""
            self.reload(backends, previous, why + since(received))
        else:
            added = ", ".join(sorted(self.pending.dynamic))
            self.reload(backends, None, f" to make {added} servers of the file (connection reuse)")

    def live_servers(self, settings: Mapping[str, Any]) -> dict[str, Server] | None:
        """The servers HAProxy runs, or None when the Runtime API cannot be used."""
        if settings.get("sticky_sessions") or not self.paths.admin_socket.exists():
            return None  # add server refuses `cookie`; HAProxy not running
        try:
            return runtime.live_servers(self.paths.admin_socket, backend_name(settings))
        except OSError as exc:
            self.log(f"runtime: {exc}; falling back to a reload")
            return None

    def run_runtime(
        self,
        step: Plan,
        want: Mapping[str, str],
        settings: Mapping[str, Any],
        received: float | None,
    ) -> bool:
        """Carry out the Runtime API part of ``step``; False if HAProxy refused a command."""
        try:
            deleted = runtime.carry_out(
                self.paths.admin_socket, backend_name(settings), step, want, self.paths.live_config
            )
        except (OSError, haproxy.RuntimeCommandFailed) as exc:
            self.log(f"runtime: {exc}; falling back to a reload")
            return False
        self.pending = replace(self.pending, drained=self.pending.drained - deleted)
        if step.runtime:
            self.log(f"runtime: {runtime.describe(step)} without a reload{since(received)}")
            update_state(
                self.paths.state,
                runtime_adds_inc=len(step.add) + len(step.enable),
                runtime_removals_inc=len(step.drain),
                last_reload=time.time(),
            )
        return True

    def write_file(
        self, backends: list[Member], settings: Mapping[str, Any], *, quiet: bool
    ) -> tuple[str | None, str]:
        """Render, validate and install haproxy.cfg, and record /nodes with it.

        Returns the previous file (see haproxy.install_config), None if
        unchanged, and the file as rendered now.
        """
        try:
            text = render_config(self.paths.template, settings, backends)
        except TemplateError as exc:
            raise HandlerError(str(exc)) from None
        try:
            previous = haproxy.install_config(text, self.paths.live_config, self.paths.haproxy_bin)
        except haproxy.ConfigInvalid as exc:
            raise HandlerError(str(exc)) from None
        except OSError as exc:
            raise HandlerError(f"cannot write {self.paths.live_config}: {exc}") from None
        self.record_nodes(backends, previous)
        if previous is None and not quiet:
            self.log(f"config: unchanged ({describe(backends)}), no reload")
        return previous, text

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
            groups = (("added", sync.added), ("updated", sync.updated), ("removed", sync.removed))
            self.log("nodes: " + listing(groups, ",", ", "))

    def reload(self, backends: list[Member], previous: str | None, why: str) -> None:
        """Seamless reload; if it fails, ``previous`` (when given) is put back."""
        started = time.monotonic()
        try:
            proc = haproxy.reload(self.paths.master_socket)
        except (haproxy.ReloadFailed, OSError) as exc:
            if previous is not None:
                haproxy.restore_config(previous, self.paths.live_config)
            # Consolidation is retried once the membership has been quiet again.
            self.pending = replace(self.pending, changed_at=time.monotonic())
            raise HandlerError(f"reload failed: {exc}") from None
        elapsed = time.monotonic() - started
        self.pending = self.pending.reloaded(time.monotonic())
        update_state(
            self.paths.state,
            reloads_inc=1,
            last_reload=time.time(),
            last_servers=[m.name for m in backends],
        )
        self.log(
            f"config: reloaded in {elapsed * 1000:.0f} ms{why}"
            f" ({describe(backends)}; worker {','.join(map(str, proc.workers))})"
        )


def backend_name(settings: Mapping[str, Any]) -> str:
    return str(settings.get("backend_name", "nodes"))


def describe(backends: Sequence[Member]) -> str:
    """``2 servers: s1, s2`` (as the log has always said it)."""
    return f"{len(backends)} servers: {', '.join(m.name for m in backends) or 'none'}"
