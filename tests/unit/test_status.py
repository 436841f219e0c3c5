"""lbcluster.status: one report of membership, /nodes and HAProxy."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakeserf import FakeSerfAgent
from helpers import SETTINGS, serf_member

from lbcluster import haproxy, status
from lbcluster.members import ParseResult, make_member
from lbcluster.nodes import sync_nodes
from lbcluster.paths import Paths
from lbcluster.serfrpc import SerfUnavailable, decode_members


def stat(name: str, state: str = "UP", scur: str = "0", stot: str = "0", **extra: str) -> Any:
    row = {
        "pxname": "nodes",
        "svname": name,
        "status": state,
        "scur": scur,
        "stot": stot,
        "check_status": "L7OK" if state == "UP" else "L4CON",
        "lastchg": "12",
    }
    row.update(extra)
    return row


def backend(name: str, address: str) -> Any:
    return make_member(name, address, {"role": "backend", "port": "3000"})


class Balancer:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths = Paths(
            nodes_dir=root / "nodes",
            settings=root / "settings.json",
            live_config=root / "haproxy.cfg",
            state=root / "state.json",
            admin_socket=root / "admin.sock",
            secrets_dir=root / "secrets",
        )
        self.paths.secrets_dir.mkdir(mode=0o700)
        self.paths.settings.write_text(json.dumps(SETTINGS))
        self.view: ParseResult | Exception = ParseResult()
        self.servers: list[dict[str, str]] | Exception = []
        self.asked: list[tuple[Path, str]] = []
        self.agent = SimpleNamespace(members=self.members_source)
        monkeypatch.setattr(haproxy, "server_states", self._server_states)

    def members_source(self) -> ParseResult:
        """Stands in for serfrpc.Agent.members (the agent is tested in test_serfrpc)."""
        if isinstance(self.view, Exception):
            raise self.view
        return self.view

    def _server_states(self, admin_socket: Path, backend: str) -> list[dict[str, str]]:
        self.asked.append((admin_socket, backend))
        if isinstance(self.servers, Exception):
            raise self.servers
        return self.servers

    def members(self, *items: dict[str, Any]) -> None:
        self.view = decode_members(list(items))


@pytest.fixture
def balancer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Balancer:
    return Balancer(tmp_path, monkeypatch)


def converge(balancer: Balancer) -> None:
    balancer.members(
        serf_member("ha", "172.18.0.2", role="balancer", port=None),
        serf_member("s1", "172.18.0.3"),
        serf_member("s2", "172.18.0.4"),
    )
    balancer.servers = [stat("s1", scur="2", stot="10"), stat("s2", stot="7")]
    sync_nodes(balancer.paths.nodes_dir, [backend("s1", "172.18.0.3"), backend("s2", "172.18.0.4")])
    balancer.paths.live_config.write_text("global\n")


def test_collect_converged(balancer: Balancer) -> None:
    converge(balancer)
    os.utime(balancer.paths.live_config, (time.time() - 30, time.time() - 30))
    balancer.paths.state.write_text(json.dumps({"reloads": 4, "refused": 1}))
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["agree"] is True
    assert report["errors"] == []
    assert report["alive_backends"] == ["s1", "s2"]
    assert report["haproxy_servers"] == ["s1", "s2"]
    assert report["up_servers"] == ["s1", "s2"]
    assert report["nodes"] == ["s1", "s2"]
    assert report["handler"] == {"reloads": 4, "refused": 1}
    assert 29 <= report["config_age_s"] <= 32
    assert balancer.asked == [(balancer.paths.admin_socket, "nodes")]
    assert report["members"] == [
        {
            "name": "ha",
            "role": "balancer",
            "address": "172.18.0.2",
            "port": None,
            "serf": "alive",
            "haproxy": None,
            "sessions": None,
            "requests": None,
            "check": None,
            "last_check_s": None,
            "in_nodes": False,
        },
        {
            "name": "s1",
            "role": "backend",
            "address": "172.18.0.3",
            "port": 3000,
            "serf": "alive",
            "haproxy": "UP",
            "sessions": 2,
            "requests": 10,
            "check": "L7OK",
            "last_check_s": 12,
            "in_nodes": True,
        },
        {
            "name": "s2",
            "role": "backend",
            "address": "172.18.0.4",
            "port": 3000,
            "serf": "alive",
            "haproxy": "UP",
            "sessions": 0,
            "requests": 7,
            "check": "L7OK",
            "last_check_s": 12,
            "in_nodes": True,
        },
    ]
    json.dumps(report)


def test_collect_uses_backend_name_from_settings(balancer: Balancer) -> None:
    balancer.paths.settings.write_text(json.dumps({**SETTINGS, "backend_name": "web"}))
    status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert balancer.asked == [(balancer.paths.admin_socket, "web")]


def test_collect_disagreement_and_unknown_names(balancer: Balancer) -> None:
    converge(balancer)
    balancer.servers = [stat("s1"), stat("s2", "DOWN"), stat("ghost", "MAINT")]
    sync_nodes(balancer.paths.nodes_dir, [backend("s1", "172.18.0.3")])
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["agree"] is False
    assert report["up_servers"] == ["s1"]
    assert report["haproxy_servers"] == ["ghost", "s1", "s2"]
    assert report["nodes"] == ["s1"]
    ghost = next(r for r in report["members"] if r["name"] == "ghost")
    assert ghost["role"] == "?"
    assert ghost["serf"] == "unknown"
    assert ghost["haproxy"] == "MAINT"
    assert ghost["in_nodes"] is False


def test_collect_nodes_disagreeing_alone(balancer: Balancer) -> None:
    converge(balancer)
    sync_nodes(balancer.paths.nodes_dir, [backend("s1", "172.18.0.3")])
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["alive_backends"] == report["haproxy_servers"] == ["s1", "s2"]
    assert report["nodes"] == ["s1"]
    assert report["errors"] == []
    assert report["agree"] is False


def test_collect_haproxy_disagreeing_alone(balancer: Balancer) -> None:
    converge(balancer)
    balancer.servers = [stat("s1")]
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["alive_backends"] == report["nodes"] == ["s1", "s2"]
    assert report["agree"] is False


def test_collect_down_servers_still_agree_on_membership(balancer: Balancer) -> None:
    converge(balancer)
    balancer.servers = [stat("s1"), stat("s2", "DOWN 1/2")]
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["agree"] is True  # same names everywhere; UP-ness is reported apart
    assert report["up_servers"] == ["s1"]


def test_collect_reports_unreadable_parts(balancer: Balancer) -> None:
    balancer.view = SerfUnavailable("serf members exited 1: no agent")
    balancer.servers = ConnectionRefusedError(111, "Connection refused")
    balancer.paths.settings.write_text("{")
    balancer.paths.nodes_dir.mkdir()
    (balancer.paths.nodes_dir / "s1").write_text("garbage\n")
    balancer.paths.state.write_text("not json")
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["agree"] is False
    errors = report["errors"]
    assert errors[0].startswith(f"{balancer.paths.settings}: unreadable settings")
    assert errors[1] == "serf members exited 1: no agent"
    assert errors[2].startswith(f"HAProxy admin socket {balancer.paths.admin_socket}: ")
    assert "Connection refused" in errors[2]
    assert errors[3].startswith(f"{balancer.paths.nodes_dir / 's1'}: malformed node file line")
    assert balancer.asked == [(balancer.paths.admin_socket, "nodes")]  # the default name
    assert report["handler"] == {}
    assert report["config_age_s"] is None
    assert report["members"] == []


def test_collect_refused_members_are_warnings_not_a_disagreement(balancer: Balancer) -> None:
    # After an attack: a hostile name (departed, Serf keeps it a day) and a
    # member advertising loopback (present). The running config is right.
    converge(balancer)
    view = balancer.view
    assert not isinstance(view, Exception)
    hostile = [
        serf_member("bad name", "172.18.0.9", status="left"),
        serf_member("s9spoof", "127.0.0.1"),
        serf_member("s8", "172.18.0.2"),  # the balancer's own address
    ]
    balancer.members(*_converged_members(), *hostile)
    report = status.collect(balancer.paths, balancer.agent, frozenset({"172.18.0.2"}))  # type: ignore[arg-type]
    assert report["agree"] is True
    assert report["errors"] == []
    assert report["refused_members"] == 3
    assert report["alive_backends"] == ["s1", "s2"]
    assert [r["name"] for r in report["members"]] == ["ha", "s1", "s2"]
    joined = "\n".join(report["warnings"])
    assert "invalid member name 'bad name'" in joined
    assert "member s9spoof: address 127.0.0.1 is a loopback address" in joined
    assert "member s8: address 172.18.0.2 is the balancer's own address" in joined
    table = status.format_table(report)
    assert "membership, /nodes and HAProxy agree" in table
    assert "warning: 3 members refused (present or departed; they never reach HAProxy):" in table


def test_collect_refuses_addresses_outside_the_cluster_networks(balancer: Balancer) -> None:
    converge(balancer)
    balancer.paths.settings.write_text(
        json.dumps({**SETTINGS, "backend_networks": ["172.18.0.0/16"]})
    )
    balancer.members(*_converged_members(), serf_member("s3", "10.9.9.9"))
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["agree"] is True
    assert report["warnings"] == [
        "refused member: member s3: address 10.9.9.9 is outside the cluster's networks"
        " (172.18.0.0/16)"
    ]


def _converged_members() -> list[dict[str, Any]]:
    return [
        serf_member("ha", "172.18.0.2", role="balancer", port=None),
        serf_member("s1", "172.18.0.3"),
        serf_member("s2", "172.18.0.4"),
    ]


def test_collect_empty_cluster_agrees(balancer: Balancer) -> None:
    balancer.members(serf_member("ha", "172.18.0.2", role="balancer", port=None))
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    assert report["agree"] is True
    assert report["alive_backends"] == []


# --- format_table -----------------------------------------------------------


def test_format_table(balancer: Balancer) -> None:
    converge(balancer)
    balancer.servers = [stat("s1", scur="2", stot="10"), stat("s2", "DOWN", stot="7")]
    report = status.collect(balancer.paths, balancer.agent)  # type: ignore[arg-type]
    report["config_age_s"] = 3.5
    report["handler"] = {"reloads": 2, "refused": 1, "last_reload": 3600 * 13 + 61}
    lines = status.format_table(report).splitlines()
    assert lines[:4] == [
        "NAME  ROLE      ENDPOINT         SERF   HAPROXY  SESS  REQS  CHECK  NODES",
        "ha    balancer  172.18.0.2       alive  -        -     -     -      -",
        "s1    backend   172.18.0.3:3000  alive  UP       2     10    L7OK   yes",
        "s2    backend   172.18.0.4:3000  alive  DOWN     0     7     L4CON  yes",
    ]
    assert lines[4] == ""
    assert lines[5] == (
        "config age: 3.5 s; reloads: 2; last reload: 13:01:01 UTC; refused inputs: 1;"
        " departed members (left/failed, hidden): 0"
    )
    assert lines[6] == "membership, /nodes and HAProxy agree"
    assert len(lines) == 7


def test_format_table_brackets_ipv6_endpoints() -> None:
    report = {
        "members": [
            {"name": "s6", "role": "backend", "address": "fd00::3", "port": 3000, "serf": "alive"}
        ],
        "config_age_s": 1.0,
        "agree": True,
        "errors": [],
    }
    assert status.format_table(report).splitlines()[1].split()[2] == "[fd00::3]:3000"


def test_format_table_disagreement_and_errors() -> None:
    report = {
        "members": [
            {"name": "ghost", "role": "?", "serf": "unknown", "haproxy": "MAINT", "sessions": 0}
        ],
        "config_age_s": None,
        "handler": {},
        "agree": False,
        "errors": ["serf members failed: boom", "another"],
    }
    lines = status.format_table(report).splitlines()
    assert lines[1].split() == ["ghost", "?", "-", "unknown", "MAINT", "0", "-", "-", "-"]
    assert lines[3] == (
        "config age: None s; reloads: 0; last reload: -; refused inputs: 0;"
        " departed members (left/failed, hidden): 0"
    )
    assert lines[4:] == ["DISAGREEMENT", "error: serf members failed: boom", "error: another"]


def test_format_table_no_members() -> None:
    report = {"members": [], "config_age_s": 1.0, "agree": True, "errors": []}
    lines = status.format_table(report).splitlines()
    assert lines[0] == "NAME  ROLE  ENDPOINT  SERF  HAPROXY  SESS  REQS  CHECK  NODES"
    assert lines[-1] == "membership, /nodes and HAProxy agree"


# --- main -------------------------------------------------------------------


def test_main_reads_the_agent_over_rpc_json_and_exit_codes(
    balancer: Balancer,
    agent: FakeSerfAgent,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = replace(balancer.paths, serf_rpc_addr=agent.addr)
    monkeypatch.setattr(status.Paths, "from_env", classmethod(lambda cls: paths))
    (balancer.paths.secrets_dir / "serf-rpc").write_text(agent.auth + "\n")
    converge(balancer)
    agent.members = [
        serf_member("ha", "172.18.0.2", role="balancer", port=None),
        serf_member("s1", "172.18.0.3"),
        serf_member("s2", "172.18.0.4"),
    ]
    assert status.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["agree"] is True
    assert agent.commands == ["handshake", "auth", "members"]
    balancer.servers = []
    assert status.main([]) == 1
    assert "DISAGREEMENT" in capsys.readouterr().out
    (balancer.paths.secrets_dir / "serf-rpc").write_text("wrong\n")
    assert status.main([]) == 1
    assert "auth: Invalid authentication token" in capsys.readouterr().out


def test_main_without_the_rpc_token_exits_2_naming_the_file(
    balancer: Balancer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status.Paths, "from_env", classmethod(lambda cls: balancer.paths))
    assert status.main(["--json"]) == 2
    token = balancer.paths.secrets_dir / "serf-rpc"
    assert capsys.readouterr().err == (
        f"lbcluster-status: cannot read the Serf RPC token: {token}: no such file\n"
    )
