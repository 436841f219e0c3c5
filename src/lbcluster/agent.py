"""Start the balancer's Serf agent (its ``serf`` s6 service runs this, as user ``serf``).

The agent's settings come from the environment that Ansible sets on the
container; its gossip key and RPC token from the files of the secrets
directory (never the environment: see secretfiles.py). The configuration is
written as JSON, readable by this user only, and Serf is exec'd with nothing
secret on its command line, so s6 supervises Serf itself. The balancer
shares the Docker host's network: during a handover it waits until the old
balancer's agent lets go of its ports.

A backend has no launcher: its s6 service runs Serf itself, from a static
configuration and the secrets directory's ``serf.json`` (the webapp image's
/etc/s6/serf/run), so that a backend boots on little CPU.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .members import ROLE_BALANCER, InvalidMember, validate_name, validate_port
from .paths import Paths
from .secretfiles import SecretUnavailable, gossip_key, rpc_token

DEFAULT_CONFIG = "/var/lib/serf/serf.json"
"""Where Serf's configuration is written (``LBCLUSTER_SERF_CONFIG``): the agent's home, 0700."""


class AgentConfigError(ValueError):
    """A setting of the agent is wrong, or its configuration cannot be written."""


def agent_config(env: Mapping[str, str], hostname: str) -> dict[str, Any]:
    """Serf's JSON configuration for the balancer, from ``LBCLUSTER_*`` variables.

    Everything but the secrets: :func:`secret_config` adds those.
    """
    role = env.get("LBCLUSTER_ROLE", "")
    if role != ROLE_BALANCER:
        raise AgentConfigError(
            f"LBCLUSTER_ROLE={role!r}: this launcher starts the balancer's agent only"
            f" (expected {ROLE_BALANCER!r}; a backend's s6 service runs serf itself)"
        )
    try:
        name = validate_name(env.get("LBCLUSTER_NODE_NAME") or hostname)
    except InvalidMember as exc:
        raise AgentConfigError(str(exc)) from None
    seeds = [s.strip() for s in env.get("LBCLUSTER_SEEDS", "").split(",") if s.strip()]
    config: dict[str, Any] = {
        "node_name": name,
        "tags": {"role": role},
        # The balancer shares the Docker host's network: its agent listens on
        # the cluster network's gateway address only, not on every interface.
        "bind": endpoint("LBCLUSTER_SERF_BIND", env.get("LBCLUSTER_SERF_BIND", "0.0.0.0:7946")),
        "rpc_addr": endpoint(
            "LBCLUSTER_SERF_RPC_ADDR",
            env.get("LBCLUSTER_SERF_RPC_ADDR", "127.0.0.1:7373"),
            loopback=True,
        ),
        # Every member runs on one Docker host, on one bridge: with the "local"
        # profile's faster probes a killed member left haproxy.cfg after
        # 5.8-7.8 s in the benchmark, instead of 7.8-11.7 s with "lan" (the
        # backends' static configuration says the same).
        "profile": env.get("LBCLUSTER_SERF_PROFILE", "local"),
        "retry_join": seeds,
        "retry_interval": env.get("LBCLUSTER_SERF_RETRY_INTERVAL", "2s"),
        # After a partition heals, failed members are retried this often.
        "reconnect_interval": env.get("LBCLUSTER_SERF_RECONNECT_INTERVAL", "5s"),
        # A stopping container leaves (member-leave) instead of looking failed.
        "leave_on_terminate": True,
        "skip_leave_on_interrupt": False,
        "snapshot_path": env.get("LBCLUSTER_SERF_SNAPSHOT", "/var/lib/serf/snapshot"),
        "rejoin_after_leave": True,
        "log_level": env.get("LBCLUSTER_SERF_LOG_LEVEL", "warn"),
    }
    handler = env.get("LBCLUSTER_EVENT_HANDLER")
    if handler:
        config["event_handlers"] = [handler]
    return config


def endpoint(variable: str, value: str, *, loopback: bool = False) -> str:
    """``value`` if it is ``IPv4:port`` (loopback only if asked), else AgentConfigError."""
    host, _, port = value.rpartition(":")
    try:
        address = ipaddress.IPv4Address(host)
        validate_port(port, member=variable)
    except (ValueError, InvalidMember):
        raise AgentConfigError(
            f"{variable}={value!r}: expected an IPv4 address and a port, as 10.0.0.1:7946"
        ) from None
    if loopback and not address.is_loopback:
        raise AgentConfigError(
            f"{variable}={value!r}: the RPC holds the cluster's membership: keep it on loopback"
        )
    return value


def secret_config(secrets_dir: Path) -> dict[str, str]:
    """The secret part of Serf's configuration, from the files of ``secrets_dir``.

    Both are mandatory: members must hold the cluster's key (others can
    neither join nor read the gossip), and the RPC needs the token.
    """
    return {"encrypt_key": gossip_key(secrets_dir), "rpc_auth": rpc_token(secrets_dir)}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``: mode 0600 from its first byte, in a directory only its
    owner may enter (created 0700; an existing one open to others is refused), atomically."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            raise AgentConfigError(
                f"{directory} is open to other users (mode {mode:04o}): the agent's"
                " configuration holds the cluster's secrets; make the directory 0700"
            )
        tmp = directory / f".{path.name}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise AgentConfigError(f"cannot write the agent's configuration {path}: {exc}") from None


def port_free(address: str, kind: socket.SocketKind) -> bool:
    """Whether ``ip:port`` can be bound now for ``kind`` (TCP or UDP), as Serf binds it."""
    host, _, port = address.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:  # as Go's listeners: a TIME_WAIT does not count
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), int(port)))
        except OSError:
            return False
    return True


def wait_for_ports(gossip: str, rpc: str, pause: float = 0.2) -> None:
    """Wait until the agent's ports are free: the balancer shares the Docker host's
    network, and during a handover the old balancer's agent holds them until it
    leaves. s6 supervises the wait; it is said once."""
    wanted = [(gossip, socket.SOCK_STREAM), (gossip, socket.SOCK_DGRAM), (rpc, socket.SOCK_STREAM)]
    said = False
    while busy := [
        f"{a}/{'tcp' if k == socket.SOCK_STREAM else 'udp'}"
        for a, k in wanted
        if not port_free(a, k)
    ]:
        if not said:
            print(
                f"waiting for {', '.join(busy)}: another agent (the balancer being "
                "replaced) still holds them",
                flush=True,
            )
            said = True
        time.sleep(pause)


def main() -> int:
    path = Path(os.environ.get("LBCLUSTER_SERF_CONFIG", DEFAULT_CONFIG))
    try:
        config = agent_config(os.environ, socket.gethostname())
        config.update(secret_config(Paths.from_env().secrets_dir))
        write_private(path, json.dumps(config, indent=2))
    except (AgentConfigError, SecretUnavailable) as exc:
        print(f"lbcluster-serf: {exc}", file=sys.stderr)
        return 2
    Path(config["snapshot_path"]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    serf = os.environ.get("LBCLUSTER_SERF_BIN", "serf")
    wait_for_ports(str(config["bind"]), str(config["rpc_addr"]))
    # Only the configuration file's name on the command line (/proc/*/cmdline
    # is world-readable): Serf reads the key and the token from the file.
    os.execvp(serf, [serf, "agent", f"-config-file={path}"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
