"""Start the Serf agent of a container (the ``serf`` s6 service runs this).

The agent's configuration comes from the environment that Ansible sets on
the container; it is written as JSON and Serf is exec'd, so s6 supervises
Serf itself. A backend joins only once its web app answers, so HAProxy
never learns about a server that cannot serve yet.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .members import (
    HINT_EVENT,
    KNOWN_ROLES,
    ROLE_BACKEND,
    InvalidMember,
    validate_name,
    validate_port,
)
from .serfcli import SerfUnavailable
from .serfrpc import SerfRPC


class AgentConfigError(ValueError):
    """An environment variable of the agent is missing or wrong."""


def agent_config(env: Mapping[str, str], hostname: str) -> dict[str, Any]:
    """Serf's JSON configuration for this container, from ``LBCLUSTER_*`` variables."""
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
    key = env.get("LBCLUSTER_SERF_ENCRYPT_KEY", "")
    if not key:
        raise AgentConfigError(
            "LBCLUSTER_SERF_ENCRYPT_KEY is not set: gossip encryption is mandatory"
        )
    try:
        if len(base64.b64decode(key, validate=True)) not in (16, 24, 32):
            raise ValueError("not 16, 24 or 32 bytes")
    except (ValueError, binascii.Error) as exc:
        raise AgentConfigError(
            f"LBCLUSTER_SERF_ENCRYPT_KEY is not base64 of a 16, 24 or 32-byte key: {exc}"
        ) from None
    seeds = [s.strip() for s in env.get("LBCLUSTER_SEEDS", "").split(",") if s.strip()]
    config: dict[str, Any] = {
        "node_name": name,
        "tags": tags,
        "bind": "0.0.0.0:7946",
        "rpc_addr": "127.0.0.1:7373",
        # Members must hold the cluster's key: others cannot join nor read gossip.
        "encrypt_key": key,
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
    rpc_auth = env.get("SERF_RPC_AUTH", "")
    if rpc_auth:
        config["rpc_auth"] = rpc_auth  # the serf CLI reads SERF_RPC_AUTH too
    handler = env.get("LBCLUSTER_EVENT_HANDLER")
    if handler:
        config["event_handlers"] = [handler]
    return config


def wait_for_app(port: int, timeout: float | None = None) -> None:
    """Block until ``HEAD /`` on the local app answers 200."""
    deadline = None if timeout is None else time.monotonic() + timeout
    announced = False
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("HEAD", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if not announced:
            print(f"waiting for the web app on port {port} before joining", flush=True)
            announced = True
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"web app on port {port} did not answer HEAD / in {timeout}s")
        time.sleep(0.1)


def send_join_hint(rpc_addr: str, auth: str, timeout: float = 30.0) -> bool:
    """Once this agent has joined, ask the balancer (uncoalesced user event) to look now.

    Serf coalesces member-join events for about a second; a user event sent
    with Coalesce=false reaches the handler at once. It is only a hint: the
    handler still reads the live membership. Talks to the local agent over
    RPC (no ``serf`` process per poll: 20 backends may be starting at once).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with SerfRPC(rpc_addr, auth, timeout=2) as rpc:
                while time.monotonic() < deadline:
                    if sum(m.status == "alive" for m in rpc.members().members) >= 2:
                        rpc.request(
                            "event", {"Name": HINT_EVENT, "Payload": b"", "Coalesce": False}
                        )
                        return True
                    time.sleep(0.1)
        except SerfUnavailable:
            continue
    return False


def spawn_join_hint(rpc_addr: str, auth: str) -> None:
    """Run send_join_hint in a grandchild adopted by PID 1 (s6-svscan reaps it)."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            try:
                send_join_hint(rpc_addr, auth)
            finally:
                os._exit(0)
        os._exit(0)
    os.wait()


def main() -> int:
    try:
        config = agent_config(os.environ, socket.gethostname())
    except AgentConfigError as exc:
        print(f"lbcluster-serf: {exc}", file=sys.stderr)
        return 2
    path = Path(os.environ.get("LBCLUSTER_SERF_CONFIG", "/run/lbcluster/serf.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(config["snapshot_path"]).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    serf = os.environ.get("LBCLUSTER_SERF_BIN", "serf")
    if config["tags"]["role"] == ROLE_BACKEND:
        wait_for_app(int(config["tags"]["port"]))
        spawn_join_hint(config["rpc_addr"], config.get("rpc_auth", ""))
    os.execvp(serf, [serf, "agent", f"-config-file={path}"])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
