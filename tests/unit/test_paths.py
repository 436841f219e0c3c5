"""lbcluster.paths: container paths, each overridable through LBCLUSTER_<FIELD>; own addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from lbcluster.paths import Paths, local_addresses


def test_defaults() -> None:
    paths = Paths.from_env({})
    assert paths == Paths()
    assert paths.nodes_dir == Path("/nodes")
    assert paths.event_log == Path("/var/log/serf.log")
    assert paths.live_config == Path("/etc/haproxy/haproxy.cfg")
    assert paths.master_socket == Path("/run/haproxy-master/master.sock")
    assert paths.haproxy_bin == "haproxy"
    assert paths.serf_rpc_addr == "127.0.0.1:7373"


def test_overrides_keep_types() -> None:
    paths = Paths.from_env(
        {
            "LBCLUSTER_NODES_DIR": "/tmp/n",
            "LBCLUSTER_SERF_RPC_ADDR": "127.0.0.1:7474",
            "LBCLUSTER_UNKNOWN": "ignored",
            "nodes_dir": "/not/this",
        }
    )
    assert paths.nodes_dir == Path("/tmp/n")
    assert isinstance(paths.nodes_dir, Path)
    assert isinstance(paths.serf_rpc_addr, str)
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


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.168.16.0/20 2 0 2
        |-- 192.168.16.0
           /20 link UNICAST
        |-- 192.168.16.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 4
     |-- 127.0.0.1
        /32 host LOCAL
"""

IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
"""


def test_local_addresses_are_the_interfaces_own_not_networks_or_broadcasts(
    tmp_path: Path,
) -> None:
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    assert local_addresses(tmp_path) == {"127.0.0.1", "192.168.16.1", "::1", "fd00::2"}
    (tmp_path / "if_inet6").unlink()  # no IPv6 in this namespace
    assert local_addresses(tmp_path) == {"127.0.0.1", "192.168.16.1"}
