"""lbcluster.agent: Serf's configuration from the container's environment."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeserf import FakeSerfAgent, rpc_member

from lbcluster import agent
from lbcluster.agent import AgentConfigError, send_join_hint, wait_for_app
from lbcluster.agent import agent_config as _agent_config

KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes


def agent_config(env: dict[str, str], hostname: str) -> dict[str, object]:
    """agent_config with the mandatory gossip key set (unless the test sets its own)."""
    return _agent_config({"LBCLUSTER_SERF_ENCRYPT_KEY": KEY, **env}, hostname)


def test_balancer_config_defaults() -> None:
    config = agent_config({"LBCLUSTER_ROLE": "balancer"}, "ha")
    assert config == {
        "node_name": "ha",
        "tags": {"role": "balancer"},
        "bind": "0.0.0.0:7946",
        "rpc_addr": "127.0.0.1:7373",
        "encrypt_key": KEY,
        "profile": "local",
        "retry_join": [],
        "retry_interval": "2s",
        "reconnect_interval": "5s",
        "leave_on_terminate": True,
        "skip_leave_on_interrupt": False,
        "snapshot_path": "/var/lib/serf/snapshot",
        "rejoin_after_leave": True,
        "log_level": "warn",
    }
    json.dumps(config)  # Serf reads it as JSON


def test_backend_config_has_port_tag() -> None:
    config = agent_config({"LBCLUSTER_ROLE": "backend"}, "s1")
    assert config["tags"] == {"role": "backend", "port": "3000"}
    config = agent_config({"LBCLUSTER_ROLE": "backend", "LBCLUSTER_APP_PORT": "8080"}, "s1")
    assert config["tags"] == {"role": "backend", "port": "8080"}


def test_balancer_ignores_app_port() -> None:
    config = agent_config({"LBCLUSTER_ROLE": "balancer", "LBCLUSTER_APP_PORT": "nope"}, "ha")
    assert config["tags"] == {"role": "balancer"}


def test_node_name_overrides_hostname() -> None:
    env = {"LBCLUSTER_ROLE": "backend", "LBCLUSTER_NODE_NAME": "web-1"}
    assert agent_config(env, "0123456789ab")["node_name"] == "web-1"
    env["LBCLUSTER_NODE_NAME"] = ""
    assert agent_config(env, "0123456789ab")["node_name"] == "0123456789ab"


@pytest.mark.parametrize("role", [None, "", "Backend", "web", "backend "])
def test_missing_or_unknown_role(role: str | None) -> None:
    env = {} if role is None else {"LBCLUSTER_ROLE": role}
    with pytest.raises(AgentConfigError) as exc:
        agent_config(env, "s1")
    assert str(exc.value) == f"LBCLUSTER_ROLE={role or ''!r}: expected one of backend, balancer"


@pytest.mark.parametrize("port", ["0", "65536", "abc", "٣", "-1", " 80", ""])
def test_bad_port(port: str) -> None:
    env = {"LBCLUSTER_ROLE": "backend", "LBCLUSTER_APP_PORT": port}
    with pytest.raises(AgentConfigError, match="member s1: "):
        agent_config(env, "s1")


def test_huge_port_is_a_config_error() -> None:
    env = {"LBCLUSTER_ROLE": "backend", "LBCLUSTER_APP_PORT": "9" * 5000}
    try:
        agent_config(env, "s1")
    except AgentConfigError:
        return
    except ValueError as exc:
        raise AssertionError(f"not an AgentConfigError: {type(exc).__name__}") from None
    raise AssertionError("accepted")


@pytest.mark.parametrize("name", ["bad name", "s1\n", "-s1", "a" * 64])
def test_bad_node_name(name: str) -> None:
    with pytest.raises(AgentConfigError, match="invalid member name"):
        agent_config({"LBCLUSTER_ROLE": "balancer", "LBCLUSTER_NODE_NAME": name}, "ha")


def test_bad_hostname_without_node_name() -> None:
    with pytest.raises(AgentConfigError, match="invalid member name 'my_host!'"):
        agent_config({"LBCLUSTER_ROLE": "balancer"}, "my_host!")


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [
        ("", []),
        ("lbcluster-members", ["lbcluster-members"]),
        (" a , b:7946,, ,c ", ["a", "b:7946", "c"]),
        (",", []),
    ],
)
def test_seeds(seeds: str, expected: list[str]) -> None:
    env = {"LBCLUSTER_ROLE": "balancer", "LBCLUSTER_SEEDS": seeds}
    assert agent_config(env, "ha")["retry_join"] == expected


def test_event_handler_and_overrides() -> None:
    env = {
        "LBCLUSTER_ROLE": "balancer",
        "LBCLUSTER_EVENT_HANDLER": "lbcluster-handler",
        "LBCLUSTER_SERF_PROFILE": "lan",
        "LBCLUSTER_SERF_RETRY_INTERVAL": "500ms",
        "LBCLUSTER_SERF_SNAPSHOT": "/tmp/snap",
        "LBCLUSTER_SERF_LOG_LEVEL": "debug",
    }
    config = agent_config(env, "ha")
    assert config["event_handlers"] == ["lbcluster-handler"]
    assert (config["profile"], config["retry_interval"]) == ("lan", "500ms")
    assert (config["snapshot_path"], config["log_level"]) == ("/tmp/snap", "debug")


def test_no_event_handler_key_when_unset_or_empty() -> None:
    assert "event_handlers" not in agent_config({"LBCLUSTER_ROLE": "backend"}, "s1")
    env = {"LBCLUSTER_ROLE": "backend", "LBCLUSTER_EVENT_HANDLER": ""}
    assert "event_handlers" not in agent_config(env, "s1")


# --- wait_for_app -----------------------------------------------------------


class _Head(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_HEAD(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_app() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Head)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_wait_for_app_returns_on_200(local_app: http.server.HTTPServer) -> None:
    wait_for_app(local_app.server_address[1], timeout=2)


def test_wait_for_app_times_out(
    local_app: http.server.HTTPServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _Head.status = 503
    try:
        with pytest.raises(TimeoutError, match=r"did not answer HEAD / in 0\.05s"):
            wait_for_app(local_app.server_address[1], timeout=0.05)
    finally:
        _Head.status = 200
    assert "waiting for the web app on port" in capsys.readouterr().out


# --- main -------------------------------------------------------------------


def test_main_bad_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LBCLUSTER_ROLE", "nope")
    assert agent.main() == 2
    assert capsys.readouterr().err.startswith("lbcluster-serf: LBCLUSTER_ROLE='nope'")


def test_main_writes_config_and_execs_serf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setenv("LBCLUSTER_ROLE", "balancer")
    monkeypatch.setenv("LBCLUSTER_SERF_ENCRYPT_KEY", KEY)
    monkeypatch.setenv("LBCLUSTER_NODE_NAME", "ha")
    monkeypatch.setenv("LBCLUSTER_SERF_CONFIG", str(tmp_path / "run" / "serf.json"))
    monkeypatch.setenv("LBCLUSTER_SERF_SNAPSHOT", str(tmp_path / "lib" / "snapshot"))
    monkeypatch.setenv("LBCLUSTER_SERF_BIN", "/opt/serf")
    monkeypatch.setattr(agent.os, "execvp", lambda f, a: calls.append((f, a)))
    assert agent.main() == 0
    written = json.loads((tmp_path / "run" / "serf.json").read_text())
    assert written["node_name"] == "ha"
    assert (tmp_path / "lib").is_dir()
    assert calls == [
        ("/opt/serf", ["/opt/serf", "agent", f"-config-file={tmp_path}/run/serf.json"])
    ]


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "gossip encryption is mandatory"),
        ("not base64!", "not base64"),
        ("c2hvcnQ=", "16, 24 or 32-byte"),  # b"short"
    ],
)
def test_gossip_key_is_mandatory_and_checked(key: str, why: str) -> None:
    with pytest.raises(AgentConfigError, match="LBCLUSTER_SERF_ENCRYPT_KEY") as exc:
        agent_config({"LBCLUSTER_ROLE": "backend", "LBCLUSTER_SERF_ENCRYPT_KEY": key}, "s1")
    assert why in str(exc.value)


def test_rpc_auth_comes_from_serf_rpc_auth() -> None:
    config = agent_config({"LBCLUSTER_ROLE": "backend", "SERF_RPC_AUTH": "tok3n"}, "s1")
    assert config["rpc_auth"] == "tok3n"
    assert "rpc_auth" not in agent_config({"LBCLUSTER_ROLE": "backend"}, "s1")


def test_join_hint_waits_for_a_peer_then_sends_an_uncoalesced_event() -> None:
    with FakeSerfAgent() as agent:
        agent.members = [rpc_member("s1", "172.18.0.3")]
        sent: list[bool] = []
        thread = threading.Thread(target=lambda: sent.append(send_join_hint(agent.addr, "token")))
        thread.start()
        time.sleep(0.5)
        assert agent.events == [], "alone: not joined yet"
        agent.members.append(rpc_member("ha", "172.18.0.2", role="balancer", port=None))
        thread.join(timeout=5)
    assert sent == [True]
    assert agent.events == [{"Name": "lbcluster-hint", "Payload": b"", "Coalesce": False}]


def test_join_hint_gives_up_without_an_agent() -> None:
    with FakeSerfAgent() as agent:
        addr = agent.addr
    assert send_join_hint(addr, "token", timeout=0.5) is False
