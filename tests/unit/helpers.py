"""Helpers shared by the unit tests (constants, fakes, builders)."""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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
    "log_level": "info",
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
