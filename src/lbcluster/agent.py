"""Start the Serf agent of a container (the ``serf`` s6 service runs this, as user ``serf``).

The agent's settings come from the environment that Ansible sets on the
container; its gossip key and RPC token from the files of the secrets
directory (never the environment: see secretfiles.py). The configuration is
written as JSON, readable by this user only, and Serf is exec'd with nothing
secret on its command line, so s6 supervises Serf itself. A backend joins
only once its web app answers, so HAProxy never learns about a server that
cannot serve yet.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .events import HINT_EVENT
from .members import (
    KNOWN_ROLES,
    ROLE_BACKEND,
    ROLE_BALANCER,
    InvalidMember,
    validate_name,
    validate_port,
)
from .paths import Paths, local_addresses
from .secretfiles import SecretUnavailable, gossip_key, rpc_token
from .serfrpc import SerfRPC, SerfUnavailable

DEFAULT_CONFIG = "/var/lib/serf/serf.json"
"""Where Serf's configuration is written (``LBCLUSTER_SERF_CONFIG``): the agent's home, 0700."""


class AgentConfigError(ValueError):
    """A setting of the agent is wrong, or its configuration cannot be written."""


def agent_config(env: Mapping[str, str], hostname: str) -> dict[str, Any]:
    """Serf's JSON configuration for this container, from ``LBCLUSTER_*`` variables.

    Everything but the secrets: :func:`secret_config` adds those.
    """
    role = env.get("LBCLUSTER_ROLE", "")
    if role not in KNOWN_ROLES:
        raise AgentConfigError(
            f"LBCLUSTER_ROLE={role!r}: expected one of {', '.join(sorted(KNOWN_ROLES))}"
        )
    try:
        name = validate_name(env.get("LBCLUSTER_NODE_NAME") or hostname)
        tags = {"role": role}
        if role == ROLE_BACKEND:
            port = validate_port(env.get("LBCLUSTER_APP_PORT", "3000"), member=name)
            tags["port"] = str(port)
    except InvalidMember as exc:
        raise AgentConfigError(str(exc)) from None
    seeds = [s.strip() for s in env.get("LBCLUSTER_SEEDS", "").split(",") if s.strip()]
    config: dict[str, Any] = {
        "node_name": name,
        "tags": tags,
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
        # 5.8-7.8 s in the benchmark, instead of 7.8-11.7 s with "lan".
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


def head_status(port: int, timeout: float = 1.0) -> int | None:
    """The status code of ``HEAD /`` on the local app, or None when it does not answer HTTP.

    A plain socket: http.client would cost this launcher a third of its CPU
    (it imports email and ssl), on every backend's boot.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            line = sock.makefile("rb").readline(256)
    except OSError:
        return None
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
        return int(parts[1])
    return None


def wait_for_app(port: int, timeout: float | None = None) -> None:
    """Block until ``HEAD /`` on the local app answers 200."""
    deadline = None if timeout is None else time.monotonic() + timeout
    announced = False
    while head_status(port) != 200:
        if not announced:
            print(f"waiting for the web app on port {port} before joining", flush=True)
            announced = True
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"web app on port {port} did not answer HEAD / in {timeout}s")
        time.sleep(0.1)


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


# Serf's own retry-join gets this long before the agent is asked to join again;
# after the hint, the membership is looked at this often.
JOIN_GRACE_S = 3.0
WATCH_S = 2.0


def seed_addresses(seeds: list[str], own: frozenset[str], port: int = 7946) -> list[str]:
    """The addresses the seed names resolve to, as ``ip:port``, except this container's own.

    A seed name may resolve to this container too (an alias the members
    share), and Serf counts a join with itself as a success: it must never
    be the target.
    """
    found: list[str] = []
    for seed in seeds:
        host, _, seed_port = seed.rpartition(":") if seed.count(":") == 1 else (seed, "", "")
        try:
            infos = socket.getaddrinfo(
                host or seed, int(seed_port or port), type=socket.SOCK_STREAM
            )
        except (OSError, ValueError):
            continue
        for info in infos:
            ip, resolved_port = str(info[4][0]), int(info[4][1])
            if ip in own:
                continue
            endpoint = f"[{ip}]:{resolved_port}" if ":" in ip else f"{ip}:{resolved_port}"
            if endpoint not in found:
                found.append(endpoint)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def keep_joined(
    rpc_addr: str,
    auth: str,
    name: str,
    rejoin: Callable[[], list[str]],
    agent_alive: Callable[[], bool],
) -> None:
    """While the agent runs: send the join hint once, and never let it stay isolated.

    The agent is asked only for the alive balancers (``members-filtered``):
    at 100 members, reading the whole list every few seconds in every backend
    cost more than the rest of this loop. Once a balancer is in sight, a user
    event (Coalesce=false) asks it to look now: Serf coalesces member-join
    events for about a second. It is only a hint: the handler still reads the
    live membership. Whenever the agent sees no alive balancer (after
    :data:`JOIN_GRACE_S`, the time Serf's own retry-join needs), it is asked
    to join the seeds again (``rejoin()``: addresses, never its own): a join
    that reached only itself, or peers too busy to answer, is not a join.
    """
    started = time.monotonic()
    hinted = False
    reported = False
    while agent_alive():
        try:
            with SerfRPC(rpc_addr, auth, timeout=2) as rpc:
                while agent_alive():
                    balancers = rpc.members_filtered({"role": ROLE_BALANCER}).members
                    isolated = not any(m.name != name for m in balancers)
                    if not isolated and not hinted:
                        rpc.request(
                            "event", {"Name": HINT_EVENT, "Payload": b"", "Coalesce": False}
                        )
                        hinted = True
                    if isolated and time.monotonic() - started >= JOIN_GRACE_S:
                        targets = rejoin()
                        if not reported:
                            shown = ", ".join(targets) or "no address"
                            print(f"no balancer in sight: joining {shown} again", flush=True)
                            reported = True
                        if targets:
                            rpc.request("join", {"Existing": targets, "Replay": False}, answer=True)
                    elif not isolated and reported:
                        print("a balancer is in sight again", flush=True)
                        reported = False
                    time.sleep(0.1 if not hinted else WATCH_S)
        except SerfUnavailable:
            time.sleep(0.1)


def spawn_keep_joined(config: Mapping[str, Any], agent_pid: int) -> None:
    """Run keep_joined in a grandchild adopted by PID 1 (s6-svscan reaps it); it ends
    when the agent (``agent_pid``, which the launcher becomes by exec) ends."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            try:
                own = local_addresses()
                port = int(str(config["bind"]).rpartition(":")[2] or 7946)
                keep_joined(
                    config["rpc_addr"],
                    config.get("rpc_auth", ""),
                    config["node_name"],
                    lambda: seed_addresses(list(config["retry_join"]), own, port),
                    lambda: _alive(agent_pid),
                )
            finally:
                os._exit(0)
        os._exit(0)
    os.wait()


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
    if config["tags"]["role"] == ROLE_BACKEND:
        wait_for_app(int(config["tags"]["port"]))
        spawn_keep_joined(config, os.getpid())
    else:
        wait_for_ports(str(config["bind"]), str(config["rpc_addr"]))
    # Only the configuration file's name on the command line (/proc/*/cmdline
    # is world-readable): Serf reads the key and the token from the file.
    os.execvp(serf, [serf, "agent", f"-config-file={path}"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
