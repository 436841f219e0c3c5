"""Helpers shared by the unit tests (constants, fakes, builders)."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lbcluster.handler import main
from lbcluster.members import Member
from lbcluster.paths import Paths
from lbcluster.render import render_config

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "templates" / "haproxy.cfg.j2"
LIBRARY = REPO / "library"

# What roles/balancer/vars/main.yml produces with the role's defaults (and what
# the role writes to settings.json); test_render checks that the keys still agree.
SETTINGS: dict[str, Any] = {
    "backend_name": "nodes",
    "http_port": 80,
    "stats_port": 1936,
    "stats_user": "",
    "stats_password": "",
    "sticky_sessions": False,
    "check_interval": "500ms",
    "check_fastinter": "250ms",
    "check_rise": 1,
    "check_fall": 2,
    "retries": 3,
    "timeout_connect": "1s",
    "timeout_check": "500ms",
    "timeout_client": "30s",
    "timeout_server": "30s",
    "timeout_http_keep_alive": "10s",
    "hard_stop_after": "30s",
    "maxconn": 4096,
    "threads": 1,
    "log_level": "info",
    "log_requests": "errors",
}


def load_library_module(name: str) -> ModuleType:
    """Import an Ansible module of library/ as a plain Python module."""
    module_name = f"lbcluster_library_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, LIBRARY / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def make_executable(path: Path, script: str) -> Path:
    path.write_text(script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# A fake `haproxy`: records its arguments and a copy of the file it was asked to
# check; fails with the text of `haproxy.fail` (next to it) when that file exists.
FAKE_HAPROXY = """#!/bin/sh
here=$(dirname "$0")
echo "$@" >> "$here/haproxy.calls"
cp "$4" "$here/haproxy.checked"
if [ -e "$here/haproxy.fail" ]; then
    cat "$here/haproxy.fail"
    exit 1
fi
exit 0
"""

# A fake `serf`: records its arguments and prints `members.json` (next to it);
# fails with the text of `serf.fail` when that file exists.
FAKE_SERF = """#!/bin/sh
here=$(dirname "$0")
echo "$@" >> "$here/serf.calls"
if [ -e "$here/serf.fail" ]; then
    cat "$here/serf.fail" >&2
    exit 1
fi
cat "$here/members.json"
"""


def serf_member(
    name: str,
    addr: str,
    *,
    role: str = "backend",
    port: str | None = "3000",
    status: str = "alive",
    **extra: Any,
) -> dict[str, Any]:
    """One entry of `serf members -format=json`, as Serf 0.10 prints it."""
    tags = {"role": role}
    if port is not None:
        tags["port"] = port
    item: dict[str, Any] = {
        "name": name,
        "addr": addr,
        "port": 7946,
        "tags": tags,
        "status": status,
        "protocol": {"max": 5, "min": 2, "version": 5},
    }
    item.update(extra)
    return item


def members_json(*items: dict[str, Any]) -> str:
    return json.dumps({"members": list(items)})


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


class Cluster:
    """A balancer's files under tmp_path, with fake serf and haproxy next to them."""

    def __init__(self, root: Path, sockets: Path, serf: Path, haproxy: Path) -> None:
        self.root = root
        self.bin = serf.parent
        self.env = {
            "LBCLUSTER_NODES_DIR": str(root / "nodes"),
            "LBCLUSTER_EVENT_LOG": str(root / "log" / "serf.log"),
            "LBCLUSTER_TEMPLATE": str(TEMPLATE),
            "LBCLUSTER_SETTINGS": str(root / "etc" / "settings.json"),
            "LBCLUSTER_BOOTSTRAP_CONFIG": str(root / "etc" / "haproxy.cfg"),
            "LBCLUSTER_LIVE_CONFIG": str(root / "live" / "haproxy.cfg"),
            "LBCLUSTER_LOCK": str(root / "run" / "handler.lock"),
            "LBCLUSTER_STATE": str(root / "run" / "state.json"),
            "LBCLUSTER_ADMIN_SOCKET": str(sockets / "admin.sock"),
            "LBCLUSTER_MASTER_SOCKET": str(sockets / "master.sock"),
            "LBCLUSTER_HAPROXY_BIN": str(haproxy),
            "LBCLUSTER_SERF_BIN": str(serf),
            "LBCLUSTER_SERF_RPC_ADDR": "127.0.0.1:7373",
        }
        self.paths = Paths.from_env(self.env)
        self.paths.settings.parent.mkdir(parents=True)
        self.paths.settings.write_text(json.dumps(SETTINGS, indent=2) + "\n")
        self.members()

    def members(self, *items: dict[str, Any]) -> None:
        (self.bin / "members.json").write_text(members_json(*items))

    def run(self, event: str | None, stdin: str = "", *argv: str) -> int:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in self.env.items():
                mp.setenv(key, value)
            if event is None:
                mp.delenv("SERF_EVENT", raising=False)
            else:
                mp.setenv("SERF_EVENT", event)
            return main(list(argv), io.StringIO(stdin))

    def log(self) -> list[str]:
        """serf.log without the timestamps (checked to be there)."""
        try:
            lines = self.paths.event_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        assert all(STAMP.match(line) for line in lines), lines
        return [STAMP.sub("", line) for line in lines]

    def nodes(self) -> dict[str, str]:
        d = self.paths.nodes_dir
        return {p.name: p.read_text() for p in sorted(d.iterdir())} if d.exists() else {}

    def live(self) -> str | None:
        try:
            return self.paths.live_config.read_text()
        except FileNotFoundError:
            return None

    def state(self) -> dict[str, Any]:
        return json.loads(self.paths.state.read_text())

    def serf_calls(self) -> list[str]:
        try:
            return (self.bin / "serf.calls").read_text().splitlines()
        except FileNotFoundError:
            return []

    def haproxy_fails(self, message: str) -> None:
        (self.bin / "haproxy.fail").write_text(message)

    def expected_config(self, *names_addrs: tuple[str, str]) -> str:
        members = [Member(n, a, "backend", 3000) for n, a in names_addrs]
        return render_config(TEMPLATE, SETTINGS, members)


def servers(config: str | None) -> list[str]:
    assert config is not None
    return [line.strip() for line in config.splitlines() if line.lstrip().startswith("server ")]
