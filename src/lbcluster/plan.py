"""The planner: what to do so that HAProxy serves exactly the wanted backends.

Pure: plain values in, a :class:`Plan` out; the handler carries it out
(Runtime API commands, the file, a reload) and feeds back what it learnt.
Servers that only come and go are changed through the Runtime API, live in
milliseconds; anything else (an address changed, no Runtime API) is a
validated reload of the rendered file. Two timers make the rest cheap:

- after a Runtime API change the file is written once events pause
  (:data:`FILE_DELAY_S`), so a burst of joins costs one ``haproxy -c``;
- once the membership has been quiet for :data:`CONSOLIDATE_S`, one reload
  turns the servers added at runtime into servers of the file (HAProxy 2.6
  reuses no connection to a server added at runtime: every request opens a
  new one, which halves what the app can serve); never sooner than
  :data:`RELOAD_GAP_S` after the previous reload, so a long scale-up whose
  joins pause now and then costs a few reloads, not one per pause (6 in
  2 -> 100 under load before).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

FILE_DELAY_S = 0.3
CONSOLIDATE_S = 2.0
RELOAD_GAP_S = 10.0


@dataclass(frozen=True)
class Server:
    """A server as HAProxy runs it (``show stat``)."""

    endpoint: str
    maint: bool = False


@dataclass(frozen=True)
class Pending:
    """What earlier steps left to do; carried from one plan to the next."""

    # Put in maintenance, deleted once their connections are gone.
    drained: frozenset[str] = frozenset()
    # Added through the Runtime API since the last reload.
    dynamic: frozenset[str] = frozenset()
    # When the Runtime API last changed something (monotonic seconds).
    changed_at: float = 0.0
    # When the file, left behind by a Runtime API change, is due.
    file_due: float | None = None
    # When HAProxy last reloaded (monotonic seconds).
    reloaded_at: float = float("-inf")

    def next_due(self) -> float | None:
        """When a plan has work to do although nothing changed (None: never)."""
        times = [t for t in (self.file_due, self.consolidate_due()) if t is not None]
        return min(times, default=None)

    def consolidate_due(self) -> float | None:
        if not self.dynamic:
            return None
        return max(self.changed_at + CONSOLIDATE_S, self.reloaded_at + RELOAD_GAP_S)

    def reloaded(self, now: float) -> Pending:
        """After a reload (at ``now``) the new worker has exactly the servers of the file."""
        return Pending(reloaded_at=now)


@dataclass(frozen=True)
class Plan:
    """The steps that make HAProxy, haproxy.cfg and /nodes follow the wanted backends."""

    add: tuple[str, ...] = ()  # new servers: add, enable health checks and traffic
    enable: tuple[str, ...] = ()  # drained servers that came back: into rotation again
    drain: tuple[str, ...] = ()  # departed servers: maintenance, no new request
    delete: tuple[str, ...] = ()  # servers in maintenance: delete once idle
    write_file: bool = True  # render, check and install haproxy.cfg and /nodes now
    # Why the change goes through the file: reload if the file changed ("": it does not).
    via_file: str = ""
    # Reload even if the file is unchanged: servers added at runtime become servers of the file.
    consolidate: bool = False
    pending: Pending = field(default_factory=Pending)  # the state once this plan is done

    @property
    def runtime(self) -> bool:
        """Whether the Runtime API changes anything."""
        return bool(self.add or self.enable or self.drain)


def plan(
    want: Mapping[str, str],
    live: Mapping[str, Server] | None,
    pending: Pending,
    now: float,
    *,
    defer_file: bool = False,
) -> Plan:
    """Plan one step towards serving ``want`` (server name -> endpoint).

    ``live``: the servers HAProxy runs, or None when the Runtime API cannot be
    used (HAProxy not running, sticky sessions: ``add server`` refuses
    ``cookie``, a settings change): the change goes through the file.
    ``defer_file``: leave the file to a later plan, due :data:`FILE_DELAY_S`
    after the first deferral (a burst of events costs one ``haproxy -c``).
    """
    if live is None:
        return Plan(via_file="the Runtime API is not used", pending=replace(pending, file_due=None))
    moved = sorted(n for n, e in want.items() if n in live and live[n].endpoint != e)
    if moved:
        return Plan(
            via_file=f"the address of {', '.join(moved)} changed",
            pending=replace(pending, file_due=None),
        )
    add = tuple(sorted(set(want) - set(live)))
    enable = tuple(sorted(set(want) & set(live) & pending.drained))
    departed = frozenset(set(live) - set(want))
    drain = tuple(sorted(n for n in departed - pending.drained if not live[n].maint))
    changed = bool(add or enable or drain)
    after = replace(
        pending,
        drained=departed,
        dynamic=(pending.dynamic | set(add)) - set(drain),
        changed_at=now if changed else pending.changed_at,
    )
    delete = tuple(sorted(departed))
    if defer_file:
        due = now + FILE_DELAY_S if after.file_due is None else after.file_due
        if now < due:
            return Plan(
                add, enable, drain, delete, write_file=False, pending=replace(after, file_due=due)
            )
    after = replace(after, file_due=None)
    consolidate = after.consolidate_due()
    quiet = not changed and consolidate is not None and now >= consolidate
    return Plan(add, enable, drain, delete, consolidate=quiet, pending=after)
