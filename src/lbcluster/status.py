"""``lbcluster-status``: one view of membership, /nodes and HAProxy (run on the balancer)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import haproxy
from .members import ROLE_BACKEND, AddressPolicy, Member, alive_backends
from .nodes import read_nodes
from .paths import Paths, local_addresses
from .render import SettingsError, load_settings
from .secretfiles import SecretUnavailable, rpc_token
from .serfrpc import Agent, SerfUnavailable


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def collect(paths: Paths, agent: Agent, own: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Gather everything; a part that cannot be read is reported, not fatal.

    The backends that should serve are chosen as the handler chooses them
    (the same validation and address policy, ``own``: the balancer's
    addresses); the members it refuses, present or departed, are warnings:
    they do not make membership, /nodes and HAProxy disagree.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        settings = load_settings(paths.settings)
        policy = AddressPolicy.from_settings(settings, own)
    except (SettingsError, ValueError) as exc:
        errors.append(str(exc))
        settings, policy = {}, AddressPolicy(own=own)
    backend = str(settings.get("backend_name", "nodes"))
    listed: list[Member] = []
    departed = 0
    alive: set[str] = set()
    try:
        view = agent.members()
        wanted = alive_backends(view.members, None, policy)
        accepted = {m.name: m for m in wanted.members}
        alive = set(accepted)
        listed = [
            m
            for m in sorted(view.members)
            if m.status == "alive" and (m.role != ROLE_BACKEND or accepted.get(m.name) == m)
        ]
        # Serf remembers departed members for a day: counted, not listed.
        departed = sum(m.status != "alive" for m in view.members)
        warnings += [f"refused member: {r}" for r in view.refused + wanted.refused]
    except SerfUnavailable as exc:
        errors.append(str(exc))
    servers: dict[str, dict[str, str]] = {}
    try:
        servers = {r["svname"]: r for r in haproxy.server_states(paths.admin_socket, backend)}
    except OSError as exc:
        errors.append(f"HAProxy admin socket {paths.admin_socket}: {exc}")
    recorded, problems = read_nodes(paths.nodes_dir)
    errors += problems
    by_name: dict[str, dict[str, Any]] = {
        m.name: {
            "name": m.name,
            "role": m.role,
            "address": m.address,
            "port": m.port,
            "serf": m.status,
        }
        for m in listed
    }
    rows = []
    for name in sorted(set(by_name) | set(servers) | {m.name for m in recorded}):
        member = by_name.get(name, {"name": name, "role": "?", "serf": "unknown"})
        stat = servers.get(name, {})
        rows.append(
            {
                **member,
                "haproxy": stat.get("status") or None,
                "sessions": int(stat.get("scur") or 0) if stat else None,
                "requests": int(stat.get("stot") or 0) if stat else None,
                "check": stat.get("check_status") or None,
                "last_check_s": int(stat["lastchg"]) if stat.get("lastchg") else None,
                "in_nodes": any(m.name == name for m in recorded),
            }
        )
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(paths.state.read_text(encoding="utf-8"))
    config_mtime = _mtime(paths.live_config)
    return {
        "members": rows,
        "alive_backends": sorted(alive),
        "haproxy_servers": sorted(servers),
        "up_servers": sorted(n for n, r in servers.items() if r.get("status", "").startswith("UP")),
        "nodes": sorted(m.name for m in recorded),
        "agree": not errors and alive == set(servers) == {m.name for m in recorded},
        "config_age_s": None if config_mtime is None else round(time.time() - config_mtime, 1),
        "departed_members": departed,
        "refused_members": len(warnings),
        "handler": state,
        "warnings": warnings,
        "errors": errors,
    }


def format_table(report: dict[str, Any]) -> str:
    header = ("NAME", "ROLE", "ENDPOINT", "SERF", "HAPROXY", "SESS", "REQS", "CHECK", "NODES")
    lines = [header]
    for r in report["members"]:
        address = str(r.get("address", ""))
        host = f"[{address}]" if ":" in address else address
        endpoint = f"{host}:{r['port']}" if r.get("port") else address
        lines.append(
            (
                r["name"],
                r.get("role", "?"),
                endpoint or "-",
                r.get("serf", "?"),
                r.get("haproxy") or "-",
                "-" if r.get("sessions") is None else str(r["sessions"]),
                "-" if r.get("requests") is None else str(r["requests"]),
                r.get("check") or "-",
                "yes" if r.get("in_nodes") else "-",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in lines
    ]
    handler = report.get("handler", {})
    last = handler.get("last_reload")
    out.append("")
    out.append(
        f"config age: {report['config_age_s']} s; reloads: {handler.get('reloads', 0)};"
        f" last reload: {time.strftime('%H:%M:%S', time.gmtime(last)) + ' UTC' if last else '-'};"
        f" refused inputs: {handler.get('refused', 0)};"
        f" departed members (left/failed, hidden): {report.get('departed_members', 0)}"
    )
    out.append("membership, /nodes and HAProxy agree" if report["agree"] else "DISAGREEMENT")
    if report.get("warnings"):
        out.append(
            f"warning: {len(report['warnings'])} members refused (present or departed;"
            " they never reach HAProxy):"
        )
        out += [f"warning: {w}" for w in report["warnings"]]
    out += [f"error: {e}" for e in report["errors"]]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbcluster-status", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    paths = Paths.from_env()
    try:
        token = rpc_token(paths.secrets_dir)
    except SecretUnavailable as exc:
        print(f"lbcluster-status: {exc}", file=sys.stderr)
        return 2
    agent = Agent(paths.serf_rpc_addr, token)
    try:
        report = collect(paths, agent, local_addresses())
    finally:
        agent.close()
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
