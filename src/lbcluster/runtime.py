"""The Runtime API part of a plan, carried out on HAProxy's admin socket.

Servers are added (with the file's ``default-server`` options, which
servers added at runtime do not inherit), put back in rotation, put in
maintenance, and deleted once their connections are gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from . import haproxy
from .journal import listing
from .plan import Plan, Server


def live_servers(admin_socket: Path, backend: str) -> dict[str, Server]:
    """The servers of ``backend`` as HAProxy runs them (raises OSError)."""
    return {
        r["svname"]: Server(r.get("addr", ""), r.get("status", "").startswith("MAINT"))
        for r in haproxy.server_states(admin_socket, backend)
    }


def carry_out(
    admin_socket: Path, backend: str, step: Plan, want: Mapping[str, str], live_config: Path
) -> set[str]:
    """Send the commands of ``step``; returns the servers deleted (the others: later).

    Raises OSError or haproxy.RuntimeCommandFailed when HAProxy refuses one.
    """
    options: list[str] = []
    if step.add:
        options = haproxy.default_server_options(live_config.read_text(encoding="utf-8"))
    for name in step.add:
        haproxy.runtime_add_server(admin_socket, backend, name, want[name], options)
    for name in step.enable:
        haproxy.runtime_set_state(admin_socket, backend, name, "ready")
    for name in step.drain:
        haproxy.runtime_set_state(admin_socket, backend, name, "maint")
    return {n for n in step.delete if haproxy.runtime_del_server(admin_socket, backend, n)}


def describe(step: Plan) -> str:
    """``added s2; removed s1`` (the Runtime API changes of ``step``)."""
    groups = (("added", step.add), ("re-enabled", step.enable), ("removed", step.drain))
    return listing(groups, ", ", "; ")
