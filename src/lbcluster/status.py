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
from .members import ROLE_BACKEND
from .nodes import read_nodes
from .paths import Paths
from .render import SettingsError, load_settings
from .serfcli import SerfUnavailable, live_members


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def collect(paths: Paths) -> dict[str, Any]:
    """Gather everything; a part that cannot be read is reported, not fatal."""
    errors: list[str] = []
    members: list[dict[str, Any]] = []
    try:
        view = live_members(paths.serf_bin, paths.serf_rpc_addr)
        members = [
            {
                "name": m.name,
                "role": m.role,
                "address": m.address,
                "port": m.port,
                "serf": m.status,
            }
            for m in sorted(view.members)
        ]
        errors += [f"refused member: {r}" for r in view.refused]
    except SerfUnavailable as exc:
        errors.append(str(exc))
    try:
        backend = str(load_settings(paths.settings).get("backend_name", "nodes"))
    except SettingsError as exc:
        errors.append(str(exc))
        backend = "nodes"
    servers: dict[str, dict[str, str]] = {}
    try:
        servers = {r["svname"]: r for r in haproxy.server_states(paths.admin_socket, backend)}
    except OSError as exc:
        errors.append(f"HAProxy admin socket {paths.admin_socket}: {exc}")
    recorded, problems = read_nodes(paths.nodes_dir)
    errors += problems
    by_name = {m["name"]: m for m in members}
    # Serf remembers departed members for a day: show them only while HAProxy
    # or /nodes still has them (that would be a disagreement worth seeing).
    shown = {n for n, m in by_name.items() if m["serf"] == "alive"}
    departed = len(by_name) - len(shown)
    rows = []
    for name in sorted(shown | set(servers) | {m.name for m in recorded}):
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
    alive = {m["name"] for m in members if m["role"] == ROLE_BACKEND and m["serf"] == "alive"}
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
        "handler": state,
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
    out += [f"error: {e}" for e in report["errors"]]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbcluster-status", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    report = collect(Paths.from_env())
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
