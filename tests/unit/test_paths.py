"""lbcluster.paths: container paths, each overridable through LBCLUSTER_<FIELD>."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbcluster.paths import Paths


def test_defaults() -> None:
    paths = Paths.from_env({})
    assert paths == Paths()
    assert paths.nodes_dir == Path("/nodes")
    assert paths.event_log == Path("/var/log/serf.log")
    assert paths.live_config == Path("/etc/haproxy/haproxy.cfg")
    assert paths.master_socket == Path("/run/haproxy/master.sock")
    assert paths.haproxy_bin == "haproxy"
    assert paths.serf_rpc_addr == "127.0.0.1:7373"


def test_overrides_keep_types() -> None:
    paths = Paths.from_env(
        {
            "LBCLUSTER_NODES_DIR": "/tmp/n",
            "LBCLUSTER_SERF_BIN": "/opt/serf",
            "LBCLUSTER_SERF_RPC_ADDR": "127.0.0.1:7474",
            "LBCLUSTER_UNKNOWN": "ignored",
            "nodes_dir": "/not/this",
        }
    )
    assert paths.nodes_dir == Path("/tmp/n")
    assert isinstance(paths.nodes_dir, Path)
    assert paths.serf_bin == "/opt/serf"
    assert isinstance(paths.serf_bin, str)
    assert paths.serf_rpc_addr == "127.0.0.1:7474"
    assert paths.event_log == Path("/var/log/serf.log")


def test_every_field_is_overridable() -> None:
    env = {f"LBCLUSTER_{name.upper()}": f"/x/{name}" for name in Paths().__dict__}
    paths = Paths.from_env(env)
    for name, value in paths.__dict__.items():
        assert str(value) == f"/x/{name}"


def test_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LBCLUSTER_STATE", "/tmp/state.json")
    assert Paths.from_env().state == Path("/tmp/state.json")
