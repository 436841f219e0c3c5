"""lbcluster.agent: Serf's configuration from the container's environment and secret files."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from lbcluster import agent
from lbcluster.agent import (
    AgentConfigError,
    agent_config,
    secret_config,
    write_private,
)
from lbcluster.secretfiles import SecretUnavailable

KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
TOKEN = "tok3nTOK3Ntok3nTOK3N"  # noqa: S105 (a test value)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """A secrets directory as the roles write it: 0700, the key and the token 0400."""
    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o700)
    for name, value in (("serf-encrypt-key", KEY), ("serf-rpc", TOKEN)):
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o400)
    return directory


def test_balancer_config_defaults() -> None:
    config = agent_config({"LBCLUSTER_ROLE": "balancer"}, "ha")
    assert config == {
        "node_name": "ha",
        "tags": {"role": "balancer"},
        "bind": "0.0.0.0:7946",
        "rpc_addr": "127.0.0.1:7373",
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


def test_the_balancer_on_the_hosts_network_listens_on_the_given_address_only() -> None:
    env = {
        "LBCLUSTER_ROLE": "balancer",
        "LBCLUSTER_SERF_BIND": "192.168.16.1:7946",
        "LBCLUSTER_SERF_RPC_ADDR": "127.0.0.1:17373",
    }
    config = agent_config(env, "host-name")
    assert (config["bind"], config["rpc_addr"]) == ("192.168.16.1:7946", "127.0.0.1:17373")


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("LBCLUSTER_SERF_BIND", "gateway:7946", "expected an IPv4 address and a port"),
        ("LBCLUSTER_SERF_BIND", "192.168.16.1", "expected an IPv4 address and a port"),
        ("LBCLUSTER_SERF_BIND", "192.168.16.1:0", "expected an IPv4 address and a port"),
        ("LBCLUSTER_SERF_RPC_ADDR", "192.168.16.1:7373", "keep it on loopback"),
    ],
)
def test_wrong_listening_addresses_are_named(variable: str, value: str, reason: str) -> None:
    with pytest.raises(AgentConfigError, match=f"{variable}='{re.escape(value)}': .*{reason}"):
        agent_config({"LBCLUSTER_ROLE": "balancer", variable: value}, "ha")


def test_secrets_never_come_from_the_environment() -> None:
    env = {
        "LBCLUSTER_ROLE": "balancer",
        "LBCLUSTER_SERF_ENCRYPT_KEY": KEY,
        "SERF_RPC_AUTH": TOKEN,
    }
    config = agent_config(env, "s1")
    assert "encrypt_key" not in config
    assert "rpc_auth" not in config
    assert KEY not in json.dumps(config)
    assert TOKEN not in json.dumps(config)


def test_node_name_overrides_hostname() -> None:
    env = {"LBCLUSTER_ROLE": "balancer", "LBCLUSTER_NODE_NAME": "web-1"}
    assert agent_config(env, "0123456789ab")["node_name"] == "web-1"
    env["LBCLUSTER_NODE_NAME"] = ""
    assert agent_config(env, "0123456789ab")["node_name"] == "0123456789ab"


@pytest.mark.parametrize("role", [None, "", "Balancer", "web", "backend"])
def test_the_launcher_is_the_balancers_only(role: str | None) -> None:
    env = {} if role is None else {"LBCLUSTER_ROLE": role}
    with pytest.raises(AgentConfigError) as exc:
        agent_config(env, "s1")
    assert str(exc.value).startswith(
        f"LBCLUSTER_ROLE={role or ''!r}: this launcher starts the balancer's agent only"
    )


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
    assert "event_handlers" not in agent_config({"LBCLUSTER_ROLE": "balancer"}, "s1")
    env = {"LBCLUSTER_ROLE": "balancer", "LBCLUSTER_EVENT_HANDLER": ""}
    assert "event_handlers" not in agent_config(env, "s1")


# --- main -------------------------------------------------------------------


def test_main_bad_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LBCLUSTER_ROLE", "nope")
    assert agent.main() == 2
    assert capsys.readouterr().err.startswith("lbcluster-serf: LBCLUSTER_ROLE='nope'")


def _main_env(monkeypatch: pytest.MonkeyPatch, secrets: Path) -> Path:
    """The environment of the serf service; returns where the configuration goes."""
    tmp_path = secrets.parent
    monkeypatch.setenv("LBCLUSTER_ROLE", "balancer")
    monkeypatch.setenv("LBCLUSTER_NODE_NAME", "ha")
    monkeypatch.setenv("LBCLUSTER_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("LBCLUSTER_SERF_CONFIG", str(tmp_path / "home" / "serf.json"))
    monkeypatch.setenv("LBCLUSTER_SERF_SNAPSHOT", str(tmp_path / "lib" / "snapshot"))
    monkeypatch.setenv("LBCLUSTER_SERF_BIN", "/opt/serf")
    # Free ports: a balancer's agent waits until its ports are (a cluster may
    # run on this host, its agent on 127.0.0.1:7373).
    monkeypatch.setenv("LBCLUSTER_SERF_BIND", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("LBCLUSTER_SERF_RPC_ADDR", f"127.0.0.1:{free_port()}")
    return tmp_path / "home" / "serf.json"


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (as the agent's own check sees it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
        address = f"127.0.0.1:{port}"
        if agent.port_free(address, socket.SOCK_STREAM) and agent.port_free(
            address, socket.SOCK_DGRAM
        ):
            return port


def test_main_writes_a_private_config_and_execs_serf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets: Path
) -> None:
    calls: list[tuple[str, list[str]]] = []
    config = _main_env(monkeypatch, secrets)
    monkeypatch.setattr(agent.os, "execvp", lambda f, a: calls.append((f, a)))
    assert agent.main() == 0
    written = json.loads(config.read_text())
    assert written["node_name"] == "ha"
    assert (written["encrypt_key"], written["rpc_auth"]) == (KEY, TOKEN)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in config.parent.iterdir()) == ["serf.json"], "no temp file left"
    assert (tmp_path / "lib").is_dir()
    assert calls == [("/opt/serf", ["/opt/serf", "agent", f"-config-file={config}"])]
    assert not any(KEY in arg or TOKEN in arg for arg in calls[0][1]), "nothing secret in argv"


@pytest.mark.parametrize(
    ("missing", "what"),
    [("serf-encrypt-key", "the Serf gossip key"), ("serf-rpc", "the Serf RPC token")],
)
def test_main_without_a_secret_file_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    secrets: Path,
    capsys: pytest.CaptureFixture[str],
    missing: str,
    what: str,
) -> None:
    config = _main_env(monkeypatch, secrets)
    (secrets / missing).unlink()
    monkeypatch.setattr(agent.os, "execvp", lambda f, a: pytest.fail("serf started"))
    assert agent.main() == 2
    assert capsys.readouterr().err == (
        f"lbcluster-serf: cannot read {what}: {secrets / missing}: no such file\n"
    )
    assert not config.exists()


def test_main_with_an_unreadable_key_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    secrets: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _main_env(monkeypatch, secrets)
    key = secrets / "serf-encrypt-key"
    real_open = Path.open

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        if self == key:  # root reads any file: deny as the kernel would another user
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", denied)
    assert agent.main() == 2
    err = capsys.readouterr().err
    assert err == (
        f"lbcluster-serf: cannot read the Serf gossip key: {key}:"
        f" permission denied to uid {os.geteuid()}\n"
    )


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "is malformed"),
        ("Zm9v YmFy", "is malformed"),  # a space inside
        ("not-base64", "is not base64 of a 16, 24 or 32-byte key"),
        ("c2hvcnQ=", "is 5 bytes once decoded: expected 16, 24 or 32"),  # b"short"
        (KEY + "\n" + KEY, "is malformed"),
    ],
)
def test_main_with_a_malformed_key_exits_2_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
    secrets: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    why: str,
) -> None:
    config = _main_env(monkeypatch, secrets)
    key = secrets / "serf-encrypt-key"
    key.chmod(0o600)
    key.write_text(content)
    assert agent.main() == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lbcluster-serf: the Serf gossip key in {key} ")
    assert why in err
    if content:
        assert content.split(maxsplit=1)[0] not in err
    assert not config.exists()


def test_secret_config_reads_both_files(secrets: Path) -> None:
    assert secret_config(secrets) == {"encrypt_key": KEY, "rpc_auth": TOKEN}
    (secrets / "serf-rpc").unlink()
    with pytest.raises(SecretUnavailable, match="serf-rpc: no such file"):
        secret_config(secrets)


def test_write_private_refuses_a_directory_open_to_others(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    with pytest.raises(AgentConfigError, match=r"open\S* is open to other users \(mode 0755\)"):
        write_private(open_dir / "serf.json", "{}")
    assert list(open_dir.iterdir()) == []


def test_write_private_replaces_a_looser_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "serf.json").write_text("old")
    (home / "serf.json").chmod(0o644)
    write_private(home / "serf.json", "new")
    assert (home / "serf.json").read_text() == "new"
    assert stat.S_IMODE((home / "serf.json").stat().st_mode) == 0o600


def test_write_private_failure_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(AgentConfigError, match="cannot write the agent's configuration"):
        write_private(tmp_path / "file" / "serf.json", "{}")


# --- a new balancer's agent waits for the old one's ports ---------------------


def test_port_free_sees_a_held_tcp_and_udp_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        assert not agent.port_free(f"127.0.0.1:{port}", socket.SOCK_DGRAM)
    assert agent.port_free(f"127.0.0.1:{port}", socket.SOCK_DGRAM)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = tcp.getsockname()[1]
        assert not agent.port_free(f"127.0.0.1:{port}", socket.SOCK_STREAM)


def test_wait_for_ports_returns_once_the_old_agent_lets_go(
    capsys: pytest.CaptureFixture[str],
) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    threading.Timer(0.5, held.close).start()
    started = time.monotonic()
    agent.wait_for_ports(f"127.0.0.1:{port}", "127.0.0.1:0", pause=0.05)
    assert time.monotonic() - started >= 0.4
    out = capsys.readouterr().out
    assert out.count("waiting for") == 1
    assert f"127.0.0.1:{port}/tcp" in out
