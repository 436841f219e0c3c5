"""Where things live inside the containers (overridable through the environment for tests)."""

from __future__ import annotations

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
    admin_socket: Path = Path("/run/haproxy/admin.sock")
    master_socket: Path = Path("/run/haproxy/master.sock")
    haproxy_service: Path = Path("/etc/s6/haproxy")
    haproxy_bin: str = "haproxy"
    serf_bin: str = "serf"
    serf_rpc_addr: str = "127.0.0.1:7373"

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
