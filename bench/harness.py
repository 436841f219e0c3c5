"""What the benchmark measures with: load, the cluster's containers, timings, percentiles.

Load goes only to 127.0.0.1 and to addresses of containers on the project's
network; every load loop is bounded in time and in count. Nothing here
connects to Docker or reads a secret at import: the Docker client
(lbcluster_support.containers.docker_client) and the stats password
(stats_auth) are made on first use.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from docker.types import Mount

from lbcluster_support import statspage
from lbcluster_support.containers import docker_client
from lbcluster_support.poll import WaitTimeout, wait_until
from lbcluster_support.project import SECRETS, copy_image_inputs

URL = "http://127.0.0.1:8080/"
HTTPS_URL = "https://127.0.0.1:8443/"
STATS_URL = "http://127.0.0.1:1936/"
# ---------------------------------------------------------------- cluster helpers


@functools.cache
def stats_auth() -> str:
    """Basic credentials of the stats page, read on first use (not for ``--help``)."""
    return statspage.authorization(statspage.password(SECRETS))


def stats() -> dict[str, str]:
    """Server name -> status on the stats page; empty while it does not answer."""
    auth = stats_auth()  # a missing password file is an error, not "no answer yet"
    try:
        return statspage.server_states(auth)
    except OSError:
        return {}


def served_by() -> str | None:
    try:
        with urllib.request.urlopen(URL, timeout=2) as response:
            return str(json.loads(response.read())["host"])
    except (OSError, ValueError):
        return None


def wait(probe: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until probe() is true, or None on timeout; an exception from probe() propagates."""
    start = time.monotonic()
    try:
        wait_until(probe, timeout, interval, ignore=())
    except WaitTimeout:
        return None
    return time.monotonic() - start


def new_backend(name: str, start: bool = True, entrypoint: list[str] | None = None) -> Any:
    """A backend like s1 (same image, settings and secrets directory), with its own name."""
    s1 = docker_client().containers.get("s1")
    env = [e for e in s1.attrs["Config"]["Env"] if not e.startswith("TAG=")] + [f"TAG={name}"]
    mounts = [
        Mount(m["Destination"], m["Source"], type=m["Type"], read_only=not m["RW"])
        for m in s1.attrs["Mounts"]
    ]
    container = docker_client().containers.create(
        s1.image,
        name=name,
        hostname=name,
        environment=env,
        labels=s1.labels,
        mounts=mounts,
        network="lbcluster",
        stop_signal="SIGTERM",
        entrypoint=entrypoint,
    )
    if start:
        container.start()
    return container


def address(name: str) -> str:
    """Container ``name``'s address on the project's network."""
    networks = docker_client().containers.get(name).attrs["NetworkSettings"]["Networks"]
    return str(networks["lbcluster"]["IPAddress"])


def backend_addresses(port: int = 3000) -> list[str]:
    """``address:port`` of every running backend (label io.lbcluster.role=backend), by name."""
    running = docker_client().containers.list(filters={"label": "io.lbcluster.role=backend"})
    return [f"{address(c.name)}:{port}" for c in sorted(running, key=lambda c: c.name)]


def remove(name: str) -> None:
    with suppress(docker.errors.NotFound):
        docker_client().containers.get(name).remove(force=True)


@contextmanager
def extra_backends(names: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for name in names:
            remove(name)


# ---------------------------------------------------------------- new versions


@contextmanager
def sources_copy() -> Iterator[Path]:
    """A copy of the project's image inputs in a temporary directory, removed afterwards
    (see lbcluster_support.project.copy_image_inputs)."""
    with tempfile.TemporaryDirectory(prefix="lbcluster-bench-") as tmp:
        yield copy_image_inputs(Path(tmp))


def new_version(copy: Path, module: str) -> None:
    """Append a comment never written before to src/lbcluster/<module>.py of ``copy``.

    Each image's tag digests its inputs: the image that holds the module
    (webapp.py: the web app's, handler.py: the balancer's) gets a new tag.
    """
    with (copy / "src" / "lbcluster" / f"{module}.py").open("a", encoding="utf-8") as source:
        source.write(f"# bench upgrade {time.time_ns()}\n")


def cluster_containers() -> dict[str, Any]:
    """Name -> container of every running container of the cluster (label io.lbcluster.role)."""
    running = docker_client().containers.list(filters={"label": "io.lbcluster.role"})
    return {c.name: c for c in running}


def started_at(container: Any) -> float:
    """When ``container`` last started (State.StartedAt), in seconds since the epoch."""
    stamp = container.attrs["State"]["StartedAt"]  # 2026-11-23T10:00:00.123456789Z
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def image_tags(prefix: str = "lbcluster-") -> set[str]:
    """The tags of the images named ``<prefix>...``."""
    return {
        tag
        for image in docker_client().images.list()
        for tag in image.tags
        if tag.startswith(prefix)
    }


def remove_images(tags: set[str]) -> list[str]:
    """Remove the images ``tags`` that no container uses; the tags removed."""
    removed = []
    for tag in sorted(tags):
        with suppress(docker.errors.APIError):
            docker_client().images.remove(tag)
            removed.append(tag)
    return removed


# ---------------------------------------------------------------- measurements


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every core), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def container_cpu_s(container_id: str) -> float | None:
    """CPU seconds of a running container's cgroup (v1 or v2), or None where unreadable."""
    for path, scale in (
        (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage", 1e9),
        (f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat", 1e6),
    ):
        with suppress(OSError, ValueError):
            text = Path(path).read_text(encoding="ascii")
            value = text.split()[1] if text.startswith("usage_usec") else text
            return int(value) / scale
    return None


def container_memory_bytes(container_id: str) -> int | None:
    """Memory a running container uses, as ``docker stats`` counts it (usage minus inactive
    page cache; cgroup v1 or v2), or None where unreadable."""
    for usage_file, stat_file, inactive in (
        (
            f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes",
            f"/sys/fs/cgroup/memory/docker/{container_id}/memory.stat",
            "total_inactive_file",
        ),
        (
            f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current",
            f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.stat",
            "inactive_file",
        ),
    ):
        with suppress(OSError, ValueError):
            usage = int(Path(usage_file).read_text(encoding="ascii"))
            stat = dict(
                line.split() for line in Path(stat_file).read_text(encoding="ascii").splitlines()
            )
            return usage - int(stat.get(inactive, 0))
    return None


def cpu_split(before: float, ha_before: float | None, containers: list[Any]) -> dict[str, Any]:
    """Where the machine's CPU went since ``before``: backends, ha, the rest (Docker, FUSE…)."""
    total = machine_cpu_s() - before
    ha_now = container_cpu_s(docker_client().containers.get("ha").id)
    backends = [container_cpu_s(c.id) for c in containers]
    if ha_now is None or ha_before is None or None in backends:
        return {"cpu_s": round(total, 2)}
    ha = ha_now - ha_before
    spent = sum(b for b in backends if b is not None)
    return {
        "cpu_s": round(total, 2),
        "cpu_backends_s": round(spent, 2),
        "cpu_per_backend_s": round(spent / len(containers), 3),
        "cpu_ha_s": round(ha, 2),
        "cpu_docker_and_rest_s": round(total - spent - ha, 2),
    }


def start_at_once(containers: list[Any]) -> list[float]:
    """Start every container in its own thread; seconds until each start call returned."""
    started: list[float] = []
    start = time.monotonic()

    def start_one(c: Any) -> None:
        c.start()
        started.append(time.monotonic() - start)

    threads = [threading.Thread(target=start_one, args=(c,)) for c in containers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return started


def docker_floor(count: int) -> float:
    """Seconds Docker needs to start ``count`` containers of the backend image that only sleep.

    The same image and network as the backends, started the same way:
    what no cluster can go below on this machine.
    """
    names = [f"bench-f{i}" for i in range(count)]
    with extra_backends(names):
        containers = [new_backend(n, start=False, entrypoint=["sleep", "infinity"]) for n in names]
        return max(start_at_once(containers))


@dataclass(frozen=True)
class WrkRun:
    """What one ``wrk --latency`` run reports."""

    rps: float
    p99_ms: float | None
    socket_errors: dict[str, int]
    non_2xx: int

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx


TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(out: str) -> WrkRun:
    """Requests/s, the 99% latency in ms, socket errors and non-2xx/3xx of wrk's output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    counts = [int(v) for v in errors.groups()] if errors else [0, 0, 0, 0]
    return WrkRun(
        rps=float(rps.group(1)) if rps else 0.0,
        p99_ms=round(float(p99.group(1)) * TIME_UNITS_MS[p99.group(2)], 3) if p99 else None,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), counts, strict=True)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def wrk(url: str, seconds: int, connections: int = 16, headers: tuple[str, ...] = ()) -> WrkRun:
    """One ``wrk --latency`` run (one thread, keep-alive unless a header says otherwise).

    For https:// it negotiates TLS (HTTP/1.1) without verifying the certificate:
    a load, not a check.
    """
    options = [arg for header in headers for arg in ("-H", header)]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *options, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    return parse_wrk(out)


def port_range() -> tuple[int, int]:
    """The ports connect() picks from (net.ipv4.ip_local_port_range), first and last."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
        low, high = (int(v) for v in ports.read().split())
    return low, high


def time_wait() -> tuple[int, int]:
    """Host sockets in TIME_WAIT: all, and those holding a port of the ephemeral range.

    The second are what can run out. A server that closes first (HAProxy or
    nginx answering ``Connection: close``) keeps TIME_WAIT on its own port
    (8080, 8090), which holds no client's port.
    """
    low, high = port_range()
    total = ephemeral = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(OSError), open(path, encoding="ascii") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                if state == "06":  # TIME_WAIT
                    total += 1
                    ephemeral += low <= int(local.rsplit(":", 1)[1], 16) <= high
    return total, ephemeral


# ---------------------------------------------------------------- percentiles


def spread(values: list[float], prefix: str = "") -> dict[str, float | None]:
    """``{prefix}p50_s`` and ``{prefix}p95_s`` of ``values``."""
    return {f"{prefix}p50_s": pct(values, 0.5), f"{prefix}p95_s": pct(values, 0.95)}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 3)
