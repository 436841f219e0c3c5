"""Benchmark: zero dropped requests while the cluster changes, and how fast it follows.

Runs against the cluster of `make up` (HAProxy on 127.0.0.1:8080). Load goes
only to 127.0.0.1 and to addresses of containers on the project's network;
every load loop is bounded in time and in count. Prints a table and writes
bench/results/latest.json.

    python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker

from lbcluster import statspage

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
URL = "http://127.0.0.1:8080/"
MAX_REQUESTS = 2_000_000  # hard cap of any load loop, whatever its duration
CLIENT = docker.from_env()
STATS_AUTH = statspage.authorization(statspage.password(ROOT / "inventory/local/.secrets"))


# ---------------------------------------------------------------- load


@dataclass
class Load:
    """Background HTTP load on 127.0.0.1:8080 (keep-alive and Connection: close)."""

    concurrency: int = 16
    allow_503: bool = False
    total: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _worker(self, session: aiohttp.ClientSession, close: bool) -> None:
        headers = {"Connection": "close"} if close else {}
        while not self._stop.is_set() and self.total < MAX_REQUESTS:
            self.total += 1
            try:
                async with session.get(URL, headers=headers) as response:
                    await response.read()
                    status = response.status
                self.statuses[str(status)] += 1
                if not (200 <= status < 300 or (status == 503 and self.allow_503)):
                    self.failed += 1
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.failed += 1
                self.statuses[type(exc).__name__] += 1

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as keep,
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
            ) as close,
        ):
            half = max(1, self.concurrency // 2)
            await asyncio.gather(
                *(self._worker(keep, False) for _ in range(half)),
                *(self._worker(close, True) for _ in range(half)),
            )

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def figures(self) -> dict[str, Any]:
        return {"total": self.total, "failed": self.failed, "statuses": dict(self.statuses)}


# ---------------------------------------------------------------- cluster helpers


def playbook(*extra: str) -> None:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    subprocess.run(
        [str(bindir / "ansible-playbook"), "site.yml", *extra],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=900,
    )


def ha_exec(*argv: str) -> str:
    result = CLIENT.containers.get("ha").exec_run(list(argv))
    return str(result.output.decode(errors="replace"))


def handler_state() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(ha_exec("cat", "/run/lbcluster/state.json"))
    except ValueError:
        return {}
    return data


def stats() -> dict[str, str]:
    """Server name -> status on the stats page; empty while it does not answer."""
    try:
        return statspage.server_states(STATS_AUTH)
    except OSError:
        return {}


def served_by() -> str | None:
    try:
        with urllib.request.urlopen(URL, timeout=2) as response:
            return str(json.loads(response.read())["host"])
    except (OSError, ValueError):
        return None


def wait(probe: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until probe() is true, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def new_backend(name: str, start: bool = True, entrypoint: list[str] | None = None) -> Any:
    """A backend like s1 (same image and settings), with its own name."""
    s1 = CLIENT.containers.get("s1")
    env = [e for e in s1.attrs["Config"]["Env"] if not e.startswith("TAG=")] + [f"TAG={name}"]
    container = CLIENT.containers.create(
        s1.image,
        name=name,
        hostname=name,
        environment=env,
        labels=s1.labels,
        network="lbcluster",
        stop_signal="SIGTERM",
        entrypoint=entrypoint,
    )
    CLIENT.api.disconnect_container_from_network(container.id, "lbcluster")
    CLIENT.api.connect_container_to_network(
        container.id, "lbcluster", aliases=["lbcluster-members"]
    )
    if start:
        container.start()
    return container


def remove(name: str) -> None:
    with suppress(docker.errors.NotFound):
        CLIENT.containers.get(name).remove(force=True)


@contextmanager
def extra_backends(names: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for name in names:
            remove(name)


def spread(values: list[float], prefix: str = "") -> dict[str, float | None]:
    """``{prefix}p50_s`` and ``{prefix}p95_s`` of ``values``."""
    return {f"{prefix}p50_s": pct(values, 0.5), f"{prefix}p95_s": pct(values, 0.95)}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 3)


# ---------------------------------------------------------------- scenarios


def scenario_scale(quick: bool) -> dict[str, Any]:
    top = 5 if quick else 10
    with Load() as load:
        playbook("-e", f"webapp_count={top}")
        playbook("-e", "webapp_count=2")
        time.sleep(2)
    return {"name": f"scale 2 -> {top} -> 2 under load", **load.figures(), "target_failed": 0}


def scenario_reloads(quick: bool) -> dict[str, Any]:
    count = 20 if quick else 50
    # Through the master CLI, one every 0.18 s at most (over 5 per second), as a burst
    # of configuration changes would. The master re-executes itself on each
    # reload and merges a request that arrives meanwhile (a signal), so each
    # reload is confirmed by its counter before the next one is due; the
    # achieved rate is part of the result.
    script = (
        "import time; from pathlib import Path; from lbcluster import haproxy\n"
        "sock = Path('/run/haproxy/master.sock')\n"
        "def reloads():\n"
        "    for _ in range(500):  # 10 s at most\n"
        "        try:\n"
        "            text = haproxy.socket_command(sock, 'show proc')\n"
        "            return haproxy.parse_show_proc(text).reloads\n"
        "        except (OSError, ValueError):  # the master is re-executing itself\n"
        "            time.sleep(0.02)\n"
        "    raise SystemExit('the master CLI did not answer for 10 s')\n"
        "before, sent, start = reloads(), 0, time.monotonic()\n"
        "due = start\n"
        f"while sent < {count} and time.monotonic() - start < 60:\n"
        "    time.sleep(max(0.0, due - time.monotonic()))\n"
        "    try:\n"
        "        haproxy.socket_command(sock, 'reload', wait=False)\n"
        "    except OSError:\n"
        "        time.sleep(0.005)\n"
        "        continue\n"
        "    sent += 1\n"
        "    due += 0.18\n"
        "    confirm = time.monotonic() + 2\n"
        "    while reloads() - before < sent and time.monotonic() < confirm:\n"
        "        time.sleep(0.02)  # every poll costs the master CPU it needs\n"
        "elapsed = time.monotonic() - start\n"
        "time.sleep(2)\n"
        "print(sent, reloads() - before, round(elapsed, 2))\n"
    )
    with Load() as load:
        sent, done, elapsed = (float(v) for v in ha_exec("python3", "-c", script).split())
        time.sleep(1)
    return {
        "name": f"{count} reloads under load",
        **load.figures(),
        "reloads": int(done),
        "reloads_requested": int(sent),
        "reloads_per_s": round(sent / elapsed, 1),
        "target_failed": 0,
        "target_min_reloads": count,
        "target_reloads_per_s": 5.0,
    }


def scenario_lab_baseline(quick: bool) -> dict[str, Any]:
    """The original lab's method: s6 restarts HAProxy (a new process, the old one killed)."""
    count = 5 if quick else 10
    with Load() as load:
        for _ in range(count):
            ha_exec("s6-svc", "-r", "/etc/s6/haproxy")
            time.sleep(1.0)
        wait(lambda: stats().get("s1") == "UP", 10)
    return {
        "name": f"lab baseline: {count} restarts of HAProxy under load",
        **load.figures(),
        "reloads": count,
        "target_failed": None,
    }


def scenario_kill_backend() -> dict[str, Any]:
    with extra_backends(["bench-k"]):
        new_backend("bench-k")
        wait(lambda: stats().get("bench-k") == "UP", 30)
        with Load() as load:
            time.sleep(1)
            CLIENT.containers.get("bench-k").kill()
            time.sleep(8)
    return {"name": "kill -9 of a backend under load", **load.figures(), "target_failed": 0}


def scenario_join_leave(quick: bool) -> dict[str, Any]:
    rounds = 4 if quick else 10
    joins: list[float] = []
    leaves: list[float] = []
    for i in range(rounds):
        name = f"bench-j{i}"
        with extra_backends([name]):
            container = new_backend(name, start=False)
            start = time.monotonic()
            container.start()
            took = wait(lambda n=name: served_by() == n, 30, interval=0.01)
            if took is not None:
                joins.append(took)
            stopper = threading.Thread(target=lambda c=container: c.stop(timeout=20))
            start = time.monotonic()
            stopper.start()

            def gone(n: str = name) -> bool:
                return all(served_by() != n for _ in range(6))

            took = wait(gone, 30, interval=0.01)
            if took is not None:
                leaves.append(time.monotonic() - start)
            stopper.join()
    return {
        "name": "join -> first request served / graceful stop -> no more traffic",
        "joins": len(joins),
        **spread(joins),
        **spread(leaves, "leave_"),
        "target_p95_s": 1.5,
        "target_leave_p95_s": 2.0,
    }


def scenario_kill_detection(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    down: list[float] = []
    removed: list[float] = []
    for i in range(rounds):
        name = f"bench-d{i}"
        with extra_backends([name]):
            new_backend(name)
            wait(lambda n=name: stats().get(n) == "UP", 30)
            start = time.monotonic()
            CLIENT.containers.get(name).kill()
            took = wait(lambda n=name: not stats().get(n, "").startswith("UP"), 30, 0.05)
            if took is not None:
                down.append(took)
            took = wait(lambda n=name: n not in ha_exec("cat", "/etc/haproxy/haproxy.cfg"), 60, 0.1)
            if took is not None:
                removed.append(time.monotonic() - start)
    return {
        "name": "kill -9 -> HAProxy stops sending / removed from haproxy.cfg",
        **spread(down),
        **spread(removed, "removed_"),
        "target_p95_s": 3.0,
        "target_removed_p95_s": 10.0,
    }


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


def cpu_split(before: float, ha_before: float | None, containers: list[Any]) -> dict[str, Any]:
    """Where the machine's CPU went since ``before``: backends, ha, the rest (Docker, FUSE…)."""
    total = machine_cpu_s() - before
    ha_now = container_cpu_s(CLIENT.containers.get("ha").id)
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

    The same image, network and alias as the backends, started the same way:
    what no cluster can go below on this machine.
    """
    names = [f"bench-f{i}" for i in range(count)]
    with extra_backends(names):
        containers = [new_backend(n, start=False, entrypoint=["sleep", "infinity"]) for n in names]
        return max(start_at_once(containers))


def scenario_burst(quick: bool) -> dict[str, Any]:
    count = 10 if quick else 20
    names = [f"bench-b{i}" for i in range(count)]
    with extra_backends(names):
        containers = [new_backend(n, start=False) for n in names]
        before = handler_state().get("reloads", 0)
        cpu_before = machine_cpu_s()
        ha_cpu_before = container_cpu_s(CLIENT.containers.get("ha").id)
        started: list[float] = []
        starter = threading.Thread(target=lambda: started.extend(start_at_once(containers)))
        starter.start()
        took = wait(lambda: all(stats().get(n) == "UP" for n in names), 60, 0.1)
        starter.join()
        cpu = cpu_split(cpu_before, ha_cpu_before, containers)
        time.sleep(4)  # the handler's reload once the membership is quiet counts too
        reloads = handler_state().get("reloads", 0) - before
        for c in containers:
            threading.Thread(target=lambda c=c: c.stop(timeout=20)).start()
        wait(lambda: not any(n in stats() for n in names), 60, 0.2)
    docker_s = max(started)
    return {
        "name": f"{count} backends started at once",
        "reloads": reloads,
        "all_serving_s": None if took is None else round(took, 2),
        "docker_start_s": round(docker_s, 2),
        "serving_after_last_start_s": None if took is None else round(took - docker_s, 2),
        "docker_floor_s": round(docker_floor(count), 2),
        **cpu,
        "target_reloads": 3,
        "target_all_serving_s": 5.0,
    }


def scenario_handler_latency() -> dict[str, Any]:
    log = ha_exec("cat", "/var/log/serf.log")
    runtime = [int(v) / 1000 for v in re.findall(r"runtime: .* live (\d+) ms after", log)]
    reload = [int(v) / 1000 for v in re.findall(r"reloaded in .* live (\d+) ms after", log)]
    both = runtime + reload
    return {
        "name": "handler: event received -> new config live (all / Runtime API / reload)",
        "samples": len(both),
        **spread(both),
        "runtime_samples": len(runtime),
        "runtime_p95_s": pct(runtime, 0.95),
        "reload_samples": len(reload),
        "reload_p95_s": pct(reload, 0.95),
        "target_p95_s": 0.25,
    }


def wrk(url: str, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def scenario_overhead(quick: bool) -> dict[str, Any]:
    seconds = 3 if quick else 8
    playbook("-e", "webapp_count=1")

    def address(name: str) -> str:
        networks = CLIENT.containers.get(name).attrs["NetworkSettings"]["Networks"]
        return str(networks["lbcluster"]["IPAddress"])

    if not shutil.which("wrk"):
        return {"name": "throughput ratio", "skipped": "wrk is not installed"}
    # Both on the containers' addresses: 127.0.0.1:8080 adds Docker's userland
    # proxy, which is not HAProxy's cost. Alternated, to share the machine's
    # noise, and the best run of each kept.
    direct_runs, proxied_runs = [], []
    for _ in range(2 if quick else 3):
        direct_runs.append(wrk(f"http://{address('s1')}:3000/", seconds))
        proxied_runs.append(wrk(f"http://{address('ha')}:80/", seconds))
    direct, proxied = max(direct_runs), max(proxied_runs)
    playbook("-e", "webapp_count=2")
    return {
        "name": "requests/s through HAProxy / direct to the backend",
        "proxied_rps": proxied,
        "direct_rps": direct,
        "ratio": round(proxied / direct, 3) if direct else None,
        "target_ratio": 0.9,
    }


def verdict(result: dict[str, Any]) -> str:
    checks = []
    if result.get("target_failed") is not None:
        checks.append(result["failed"] <= result["target_failed"])
    for key in ("p95_s", "leave_p95_s", "removed_p95_s", "all_serving_s"):
        target = result.get(f"target_{key}")
        if target is not None:
            checks.append(result.get(key) is not None and result[key] <= target)
    if result.get("target_reloads") is not None:
        checks.append(result["reloads"] <= result["target_reloads"])
    if result.get("target_min_reloads") is not None:
        checks.append(result["reloads"] >= result["target_min_reloads"])
    if result.get("target_reloads_per_s") is not None:
        checks.append(result["reloads_per_s"] >= result["target_reloads_per_s"])
    if result.get("target_ratio") is not None:
        checks.append(result.get("ratio") is not None and result["ratio"] >= result["target_ratio"])
    if not checks:
        return "-"
    return "ok" if all(checks) else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 5 minutes)")
    parser.add_argument("--only", help="comma-separated scenario names to run")
    args = parser.parse_args()
    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "scale": lambda: scenario_scale(args.quick),
        "reloads": lambda: scenario_reloads(args.quick),
        "kill": scenario_kill_backend,
        "join": lambda: scenario_join_leave(args.quick),
        "detect": lambda: scenario_kill_detection(args.quick),
        "burst": lambda: scenario_burst(args.quick),
        "handler": scenario_handler_latency,
        "overhead": lambda: scenario_overhead(args.quick),
        "lab": lambda: scenario_lab_baseline(args.quick),
    }
    chosen = args.only.split(",") if args.only else list(scenarios)
    playbook("-e", "webapp_count=2")
    started = time.monotonic()
    results = []
    for key in chosen:
        print(f"... {key}", flush=True)
        result = scenarios[key]()
        result["scenario"] = key
        result["verdict"] = verdict(result)
        results.append(result)
        playbook("-e", "webapp_count=2")
    haproxy_version = ha_exec("haproxy", "-v").splitlines()[0]
    report = {
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "haproxy": haproxy_version,
            "docker": CLIENT.version().get("Version"),
        },
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'scenario':<10} {'verdict':<7} figures")
    for r in results:
        figures = {
            k: v
            for k, v in r.items()
            if k not in ("name", "scenario", "verdict", "statuses") and v is not None
        }
        print(f"{r['scenario']:<10} {r['verdict']:<7} {r['name']}: {figures}")
    print(f"\nwrote {RESULTS / 'latest.json'} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
