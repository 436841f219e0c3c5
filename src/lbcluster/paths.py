"""Where things live inside the containers (overridable through the environment for tests),
and which addresses are the container's own (read from /proc, not from its name: the
balancer shares the Docker host's network)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    nodes_dir: Path = Path("/nodes")
    event_log: Path = Path("/var/log/serf.log")
    template: Path = Path("/usr/share/lbcluster/haproxy.cfg.j2")
    settings: Path = Path("/etc/lbcluster/settings.json")
    bootstrap_config: Path = Path("/etc/lbcluster/haproxy.cfg")
    live_config: Path = Path("/etc/haproxy/haproxy.cfg")
    lock: Path = Path("/run/lbcluster/handler.lock")
    state: Path = Path("/run/lbcluster/state.json")
    # /run/haproxy is shared by the balancer containers of one host (the new
    # one takes the listeners from the old one through admin.sock); the
    # master's socket is each container's own.
    admin_socket: Path = Path("/run/haproxy/admin.sock")
    master_socket: Path = Path("/run/haproxy-master/master.sock")
    haproxy_service: Path = Path("/etc/s6/haproxy")
    haproxy_bin: str = "haproxy"
    serf_rpc_addr: str = "127.0.0.1:7373"
    # The cluster's secrets: a read-only bind mount of a directory on the
    # Docker host, 0700 and its files 0400, owned by the Serf agent's user.
    secrets_dir: Path = Path("/run/secrets/lbcluster")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Paths:
        """Defaults, each overridable by ``LBCLUSTER_<FIELD>`` (e.g. ``LBCLUSTER_NODES_DIR``)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for name, default in cls().__dict__.items():
            raw = env.get(f"LBCLUSTER_{name.upper()}")
            if raw is not None:
                values[name] = Path(raw) if isinstance(default, Path) else raw
        return cls(**values)  # type: ignore[arg-type]


def local_addresses(proc: Path = Path("/proc/net")) -> frozenset[str]:
    """The addresses of this network namespace's interfaces: the container's own, or the
    Docker host's when the container shares the host's network (the balancer)."""
    found: set[str] = set()
    for name, parse in (("fib_trie", fib_local_addresses), ("if_inet6", inet6_addresses)):
        with contextlib.suppress(OSError):  # if_inet6 is absent without IPv6
            found |= parse((proc / name).read_text())
    return frozenset(found)


def fib_local_addresses(fib_trie: str) -> set[str]:
    """The IPv4 addresses ``/proc/net/fib_trie`` marks ``/32 host LOCAL``: the interfaces' own."""
    found, last = set(), ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            last = text[4:]
        elif text == "/32 host LOCAL" and last:
            found.add(ipaddress.IPv4Address(last).compressed)
    return found


def inet6_addresses(if_inet6: str) -> set[str]:
    """The IPv6 addresses of ``/proc/net/if_inet6`` (32 hex digits first on each line)."""
    found = set()
    for line in if_inet6.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            found.add(ipaddress.IPv6Address(int(fields[0], 16)).compressed)
    return found
