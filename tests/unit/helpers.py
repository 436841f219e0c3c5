"""Helpers shared by the unit tests (constants, fakes, builders)."""

from __future__ import annotations

import importlib.util
import io
import ipaddress
import json
import re
import stat
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakeserf import FakeSerfAgent, rpc_member

from lbcluster.cli import EXIT_ERROR, EXIT_OK, main
from lbcluster.daemon import Daemon
from lbcluster.handler import Handler
from lbcluster.journal import EventLog
from lbcluster.members import Member
from lbcluster.paths import Paths
from lbcluster.render import render_config
from lbcluster.serfrpc import Agent, SerfRPC

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "templates" / "haproxy.cfg.j2"
LIBRARY = REPO / "library"

# What roles/balancer/vars/main.yml produces with the role's defaults (and what
# the role writes to settings.json); test_render checks that the keys still agree.
SETTINGS: dict[str, Any] = {
    "backend_name": "nodes",
    "http_address": "127.0.0.1",
    "http_port": 8080,
    "https_address": "127.0.0.1",
    "https_port": 8443,
    "stats_address": "127.0.0.1",
    "stats_port": 1936,
    "stats_user": "",
    "stats_password_hash": "",
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
    "tls": True,
    "tls_redirect": False,
    "tls_pem": "/etc/lbcluster/tls/server.pem",
    "tls_certificate_sha256": "0123456789abcdef" * 4,
    "backend_networks": ["172.18.0.0/16", "fd00::/8"],
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

serf_member = rpc_member  # the name the handler tests use


def event_line(record: dict[str, Any]) -> str:
    """The line Serf writes on an event handler's stdin for ``record``."""
    ip = ipaddress.ip_address(record["Addr"])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    tags = ",".join(f"{k}={v}" for k, v in record["Tags"].items())
    return f"{record['Name']}\t{ip.compressed}\t\t{tags}"


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


class Cluster:
    """A balancer's files under tmp_path, a fake Serf agent (RPC) and a fake haproxy.

    ``way``: how events reach the handler. ``script``: the lab's event-handler
    script (``lbcluster-handler`` with SERF_EVENT and stdin); ``service``: the
    production path, the agent's RPC event stream read by the service loop
    (daemon.Daemon, stepped by the test: no thread, no timing).
    """

    def __init__(
        self, root: Path, sockets: Path, agent: FakeSerfAgent, haproxy: Path, way: str = "script"
    ) -> None:
        self.root = root
        self.bin = haproxy.parent
        self.agent = agent
        self.way = way
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
            "LBCLUSTER_SERF_RPC_ADDR": agent.addr,
            "LBCLUSTER_SECRETS_DIR": str(root / "secrets"),
        }
        self.paths = Paths.from_env(self.env)
        self.rpc_token(agent.auth)
        self.paths.settings.parent.mkdir(parents=True)
        self.paths.settings.write_text(json.dumps(SETTINGS, indent=2) + "\n")
        self.members()
        self._service: tuple[Daemon, SerfRPC] | None = None

    def rpc_token(self, token: str) -> None:
        """The RPC token the handler reads (its file in the secrets directory)."""
        self.paths.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        (self.paths.secrets_dir / "serf-rpc").write_text(token + "\n")

    def members(self, *records: dict[str, Any]) -> None:
        """What the agent answers to ``members`` from now on."""
        self.agent.members = list(records)

    def run(self, event: str | None, stdin: str = "", *argv: str) -> int:
        """``lbcluster-handler ARGV`` with SERF_EVENT=event (None: unset) and ``stdin``."""
        with pytest.MonkeyPatch.context() as mp:
            for key, value in self.env.items():
                mp.setenv(key, value)
            if event is None:
                mp.delenv("SERF_EVENT", raising=False)
            else:
                mp.setenv("SERF_EVENT", event)
            return main(list(argv), io.StringIO(stdin))

    def event(self, name: str, *records: dict[str, Any], user_event: str = "") -> int:
        """One Serf event naming ``records``, delivered the cluster's way; the exit status
        (service: EXIT_ERROR when the handler counted an error)."""
        if self.way == "script":
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SERF_USER_EVENT", user_event)
                return self.run(name, "\n".join(event_line(r) for r in records))
        daemon, stream = self.service()
        errors = self.counter("errors")
        body: dict[str, Any] = {"Event": name, "LTime": 1}
        if name == "user":
            body |= {"Name": user_event, "Payload": b""}
        else:
            body["Members"] = list(records)
        self.agent.push(body)
        deadline = time.monotonic() + 5
        while not daemon.step(stream):
            assert time.monotonic() < deadline, "the service did not receive the event"
        # What the event left for later (the file after a Runtime API change) is done.
        while daemon.handler.pending.file_due is not None:
            assert time.monotonic() < deadline, "the deferred file was not written"
            daemon.step(stream)
        return EXIT_ERROR if self.counter("errors") > errors else EXIT_OK

    def service(self) -> tuple[Daemon, SerfRPC]:
        """The service loop, connected to the agent's event stream (once)."""
        if self._service is None:
            log = EventLog(self.paths.event_log)
            handler = Handler(self.paths, log, Agent(self.agent.addr, self.agent.auth).members)
            daemon = Daemon(handler, self.paths, log, self.agent.auth, reconcile_s=3600)
            daemon.next_reconcile = float("inf")  # only events (and what they leave) drive it
            stream = SerfRPC(self.agent.addr, self.agent.auth)
            stream.subscribe(log=True)
            self._service = (daemon, stream)
        return self._service

    def close(self) -> None:
        if self._service is not None:
            self._service[1].close()

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

    def counter(self, name: str) -> int:
        try:
            return int(self.state().get(name, 0))
        except FileNotFoundError:
            return 0

    def queries(self) -> int:
        """How many times the membership was read from the agent."""
        with self.agent.lock:
            return self.agent.commands.count("members")

    def haproxy_fails(self, message: str) -> None:
        (self.bin / "haproxy.fail").write_text(message)

    def expected_config(self, *names_addrs: tuple[str, str]) -> str:
        members = [Member(n, a, "backend", 3000) for n, a in names_addrs]
        return render_config(TEMPLATE, SETTINGS, members)


def servers(config: str | None) -> list[str]:
    assert config is not None
    return [line.strip() for line in config.splitlines() if line.lstrip().startswith("server ")]
