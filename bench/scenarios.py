"""The benchmark's scenarios: each changes the cluster (or loads it) and returns its figures.

A scenario returns a dict: ``name`` (the table's label), the figures, and the
``target_*`` values its verdict is judged on (bench/run.py). They run against
the cluster of ``make up`` with 2 backends and leave it so (the runner scales
back to 2 after each).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peer
from harness import (
    HTTPS_URL,
    STATS_URL,
    URL,
    WrkRun,
    address,
    backend_addresses,
    cluster_containers,
    container_cpu_s,
    container_memory_bytes,
    cpu_split,
    docker_floor,
    extra_backends,
    image_tags,
    machine_cpu_s,
    new_backend,
    new_version,
    pct,
    port_range,
    remove_images,
    served_by,
    sources_copy,
    spread,
    start_at_once,
    started_at,
    stats,
    stats_auth,
    time_wait,
    wait,
    wrk,
)

from lbcluster_support import playbook
from lbcluster_support.containers import docker_client, ha_exec, handler_state
from lbcluster_support.load import Load


def scenario_scale(quick: bool) -> dict[str, Any]:
    top = 5 if quick else 10
    with Load() as load:
        playbook.scale(top)
        playbook.scale(2)
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
        "sock = Path('/run/haproxy-master/master.sock')\n"
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


UPGRADE = "upgrades: site.yml re-run under load (backends rolled, balancer handed over)"


def replaced_since(before: dict[str, str], reloads: int | None) -> dict[str, Any]:
    """The cluster's containers not the same as ``before`` (name -> id), how the new
    backends' starts spread (seconds from the first to the last, State.StartedAt), and
    the balancer's reloads since it counted ``reloads`` (None when it was replaced)."""
    now = cluster_containers()
    names = sorted(name for name, c in now.items() if before.get(name) != c.id)
    starts = [
        started_at(now[name])
        for name in names
        if now[name].labels.get("io.lbcluster.role") == "backend"
    ]
    return {
        "replaced": names,
        "backends_first_to_last_s": round(max(starts) - min(starts), 2)
        if len(starts) > 1
        else None,
        "balancer_reloads": None
        if reloads is None or "ha" in names
        else handler_state().get("reloads", 0) - reloads,
    }


def alternate_value(current: str | None, default: str, other: str) -> str:
    """``other`` unless the cluster has it already, then ``default``: always a real change."""
    return default if current == other else other


class Upgrades:
    """Plays of site.yml that build the images from a copy of the sources
    (harness.sources_copy), with the settings given so far: each case changes one thing."""

    def __init__(self, copy: Path) -> None:
        self.copy = copy
        self.settings: dict[str, str] = {"webapp_count": "2"}

    def play(self, **changes: str) -> float:
        """site.yml with the copy's images and the settings so far, updated by ``changes``.

        Returns the play's seconds.
        """
        self.settings.update(changes)
        extra = {"cluster_images_project_dir": str(self.copy), **self.settings}
        start = time.monotonic()
        playbook.playbook("site.yml", *(a for k, v in extra.items() for a in ("-e", f"{k}={v}")))
        return round(time.monotonic() - start, 1)

    def case(
        self, name: str, count: int, module: str | None = None, **changes: str
    ) -> dict[str, Any]:
        """With ``count`` backends (scaled to first, without load), a new version of
        ``module``'s image and/or new settings, applied by one play under load."""
        if self.settings["webapp_count"] != str(count):
            self.play(webapp_count=str(count))
        if module:
            new_version(self.copy, module)
        before = {n: c.id for n, c in cluster_containers().items()}
        reloads = handler_state().get("reloads", 0)
        with Load() as load:
            seconds = self.play(**changes)
            time.sleep(2)
        return {
            "case": name,
            **load.figures(),
            "play_s": seconds,
            **replaced_since(before, reloads),
            "target_failed": 0,
        }

    def lab(self) -> dict[str, Any]:
        """The lab's way: a new web app, every container removed at once, the play remakes them."""
        if self.settings["webapp_count"] != "2":
            self.play(webapp_count="2")
        new_version(self.copy, "webapp")
        containers = cluster_containers()
        before = {n: c.id for n, c in containers.items()}
        with Load(allow_503=False) as load:
            removers = [
                threading.Thread(target=c.remove, kwargs={"force": True})
                for c in containers.values()
            ]
            for t in removers:
                t.start()
            for t in removers:
                t.join()
            seconds = self.play()
            time.sleep(2)
        figures = replaced_since(before, None)
        # The play still converges: its last task waits until HAProxy serves exactly s1, s2.
        again = self.play()
        return {
            "case": "lab way: web app changed, ha and all backends removed at once, N=2",
            **load.figures(),
            "play_s": seconds,
            **figures,
            "converged_after_play_s": again,
            "target_failed": None,
        }


def rollback() -> dict[str, Any]:
    """site.yml with the project's own sources and settings under load, N=2 (as make up)."""
    before = {n: c.id for n, c in cluster_containers().items()}
    reloads = handler_state().get("reloads", 0)
    with Load() as load:
        start = time.monotonic()
        playbook.scale(2)
        seconds = round(time.monotonic() - start, 1)
        time.sleep(2)
    return {
        "case": "rollback: the project's sources and settings (make up), N=2",
        **load.figures(),
        "play_s": seconds,
        **replaced_since(before, reloads),
        "target_failed": None,
    }


def scenario_upgrade(quick: bool) -> dict[str, Any]:
    """Each change applied as an operator does: re-running site.yml, under load.

    A new version is a comment appended to a module in a copy of the sources
    (the working tree is never changed); the settings alternate between two
    values, so each is a real change. Last, the cluster goes back to the
    project's sources and settings with 2 backends, and the images the
    scenario built are removed.
    """
    images_before = image_tags()
    cases: list[dict[str, Any]] = []
    try:
        with sources_copy() as copy:
            up = Upgrades(copy)
            cases.append(up.case("web app changed, N=2", 2, "webapp"))
            if not quick:
                cases.append(up.case("web app changed, N=5", 5, "webapp"))
                cases.append(up.case("web app changed, N=1 (surge)", 1, "webapp"))
            cases.append(up.case("balancer changed (handler.py), N=2", 2, "handler"))
            settings = json.loads(ha_exec("cat", "/etc/lbcluster/settings.json"))
            interval = alternate_value(settings.get("check_interval"), "500ms", "400ms")
            cases.append(
                up.case(
                    f"reload setting: balancer_check_interval={interval}, N=2",
                    2,
                    balancer_check_interval=interval,
                )
            )
            if not quick:
                env = docker_client().containers.get("s1").attrs["Config"]["Env"]
                current = dict(e.split("=", 1) for e in env).get("WEBAPP_DRAIN_SECONDS")
                drain = alternate_value(current, "3", "4")
                cases.append(
                    up.case(
                        f"new backends setting: webapp_drain_seconds={drain}, N=2",
                        2,
                        webapp_drain_seconds=drain,
                    )
                )
                cases.append(up.lab())
        cases.append(rollback())
    finally:
        playbook.scale(2)  # whatever happened: the cluster of make up
        removed = remove_images(image_tags() - images_before)
    targeted = [c for c in cases if c["target_failed"] is not None]
    statuses: Counter[str] = Counter()
    for c in targeted:
        statuses.update(c["statuses"])
    n5 = [c for c in cases if c["case"].endswith("N=5")]
    lab = [c for c in cases if c["case"].startswith("lab way")]
    return {
        "name": UPGRADE,
        "total": sum(c["total"] for c in targeted),
        "failed": sum(c["failed"] for c in targeted),
        "statuses": dict(statuses),
        "n5_first_to_last_s": n5[0]["backends_first_to_last_s"] if n5 else None,
        "lab_total": lab[0]["total"] if lab else None,
        "lab_failed": lab[0]["failed"] if lab else None,
        "images_removed": len(removed),
        "cases": cases,
        "target_failed": 0,
    }


def scenario_kill_backend() -> dict[str, Any]:
    with extra_backends(["bench-k"]):
        new_backend("bench-k")
        wait(lambda: stats().get("bench-k") == "UP", 30)
        with Load() as load:
            time.sleep(1)
            docker_client().containers.get("bench-k").kill()
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
            docker_client().containers.get(name).kill()
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


def scenario_burst(quick: bool) -> dict[str, Any]:
    count = 10 if quick else 20
    names = [f"bench-b{i}" for i in range(count)]
    with extra_backends(names):
        containers = [new_backend(n, start=False) for n in names]
        before = handler_state().get("reloads", 0)
        cpu_before = machine_cpu_s()
        ha_cpu_before = container_cpu_s(docker_client().containers.get("ha").id)
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
    floor = round(docker_floor(count), 2)
    return {
        "name": f"{count} backends started at once",
        "reloads": reloads,
        "all_serving_s": None if took is None else round(took, 2),
        "docker_start_s": round(docker_s, 2),
        "serving_after_last_start_s": None if took is None else round(took - docker_s, 2),
        "docker_floor_s": floor,
        # All serving, from the first start call, against Docker's own time for
        # as many containers that only sleep: what this machine sets.
        "floor_ratio": None if took is None else round(took / floor, 2),
        **cpu,
        "target_reloads": 3,
        "target_floor_ratio": 1.5,
    }


def handler_live_s(log: str, *, runtime: bool = True, reload: bool = True) -> list[float]:
    """Seconds from event to live configuration of the changes in a handler log: those
    made through the Runtime API, those made by a reload, or both."""
    kinds = [kind for kind, wanted in (("runtime: ", runtime), ("reloaded in ", reload)) if wanted]
    pattern = rf"(?:{'|'.join(kinds)}).* live (\d+) ms after"
    return [int(v) / 1000 for v in re.findall(pattern, log)]


def slowest_tasks(stdout: str, count: int = 5) -> list[str]:
    """The ``count`` slowest tasks of a play run with the profile_tasks callback."""
    recap = stdout.partition("TASKS RECAP")[2]
    lines = [line for line in recap.splitlines() if re.search(r" -+ *\d+\.\d+s$", line)]
    return [re.sub(r" -+ *", " ", line).strip() for line in lines[:count]]


PROFILE = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}


def timed_scale(count: int) -> tuple[float, list[str]]:
    """Seconds ``site.yml -e webapp_count=<count>`` takes, and its slowest tasks."""
    start = time.monotonic()
    proc = playbook.scale(count, env=PROFILE)
    return time.monotonic() - start, slowest_tasks(proc.stdout)


def boot_cpu(rounds: int) -> list[float]:
    """CPU seconds of a new backend's cgroup from its start until HAProxy has it UP."""
    spent: list[float] = []
    for i in range(rounds):
        name = f"bench-c{i}"
        with extra_backends([name]):
            container = new_backend(name)
            if wait(lambda n=name: stats().get(n) == "UP", 60, 0.05) is not None:
                cpu = container_cpu_s(container.id)
                if cpu is not None:
                    spent.append(cpu)
    return spent


def kill_at_once(names: list[str], timeout: float = 60) -> tuple[list[float], list[float]]:
    """``kill -9`` the containers ``names`` at once (one thread each); seconds from each
    one's death until it is out of rotation (not UP in HAProxy) and out of haproxy.cfg."""
    killed: dict[str, float] = {}

    def kill(container: Any) -> None:
        container.kill()
        killed[container.name] = time.monotonic()

    containers = [docker_client().containers.get(name) for name in names]
    threads = [threading.Thread(target=kill, args=(c,)) for c in containers]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    down: dict[str, float] = {}
    removed: dict[str, float] = {}
    while time.monotonic() - start < timeout and len(removed) < len(names):
        states, cfg = stats(), ha_exec("cat", "/etc/haproxy/haproxy.cfg")
        now = time.monotonic()
        for name in names:
            if name not in down and not states.get(name, "").startswith("UP"):
                down[name] = now - killed[name]
            if name not in removed and not re.search(rf"^\s+server {name} ", cfg, re.M):
                removed[name] = now - killed[name]
        time.sleep(0.05)
    return list(down.values()), list(removed.values())


def at_rest() -> dict[str, Any]:
    """With no load: the balancer's CPU and memory, each backend's memory, and how long the
    status tool takes."""
    time.sleep(10)
    ha = docker_client().containers.get("ha")
    before = container_cpu_s(ha.id)
    time.sleep(10)
    after = container_cpu_s(ha.id)
    backends = docker_client().containers.list(filters={"label": "io.lbcluster.role=backend"})
    memory = [m for m in (container_memory_bytes(c.id) for c in backends) if m is not None]
    ha_memory = container_memory_bytes(ha.id)
    status: list[float] = []
    for _ in range(5):
        start = time.monotonic()
        ha_exec("lbcluster-status", "--json")
        status.append(time.monotonic() - start)
    mib = 1024 * 1024
    return {
        "backends_running": len(backends),
        "ha_cpu_percent_idle": (
            None if before is None or after is None else round((after - before) * 10, 1)
        ),
        "ha_memory_mib": None if ha_memory is None else round(ha_memory / mib, 1),
        "backend_memory_mib_mean": round(statistics.mean(memory) / mib, 1) if memory else None,
        "backend_memory_mib_max": round(max(memory) / mib, 1) if memory else None,
        "status_s_max": round(max(status), 2),
    }


def scenario_scale100(quick: bool) -> dict[str, Any]:
    """A hundred backends: the play's times, zero failed requests, the handler, per-backend
    boot CPU and memory, the balancer at rest, the status tool, 10 killed at once."""
    top, rounds = (40, 1) if quick else (100, 5)
    up: list[float] = []
    down: list[float] = []
    tasks: dict[str, list[str]] = {}
    # The play alone first, with no load: its own cost. Under load it shares
    # the two cores with the load generator, HAProxy and the backends.
    quiet_up, tasks["up at rest"] = timed_scale(top)
    quiet_rerun, tasks["re-run at rest"] = timed_scale(top)
    quiet_down, tasks["down at rest"] = timed_scale(2)
    log_before = len(ha_exec("cat", "/var/log/serf.log"))
    reloads_before = handler_state().get("reloads", 0)
    reloads, live, rerun = 0, [], 0.0
    with Load() as load:
        for i in range(rounds):
            took, tasks[f"up {i + 1}"] = timed_scale(top)
            up.append(took)
            if i == 0:
                reloads = handler_state().get("reloads", 0) - reloads_before
                live = handler_live_s(ha_exec("cat", "/var/log/serf.log")[log_before:])
                rerun, tasks["re-run"] = timed_scale(top)
            if i < rounds - 1:
                took, tasks[f"down {i + 1}"] = timed_scale(2)
                down.append(took)
    rest = at_rest()
    boot = boot_cpu(3 if quick else 5)
    out_of_rotation, out_of_cfg = kill_at_once([f"s{n}" for n in range(top - 9, top + 1)])
    with Load() as load_down:
        took, tasks[f"down {rounds}"] = timed_scale(2)
        down.append(took)
    for name, slowest in tasks.items():
        print(f"    {name}: " + "; ".join(slowest[:3]), flush=True)
    return {
        "name": f"{top} backends: 2 -> {top} -> 2 ({rounds} times) under load",
        "total": load.total + load_down.total,
        "failed": load.failed + load_down.failed,
        "at_rest_up_s": round(quiet_up, 1),
        "at_rest_rerun_s": round(quiet_rerun, 1),
        "at_rest_down_s": round(quiet_down, 1),
        "up_s": [round(v, 1) for v in up],
        "up_s_max": round(max(up), 1),
        "rerun_s": round(rerun, 1),
        "down_s": [round(v, 1) for v in down],
        "down_s_max": round(max(down), 1),
        "reloads": reloads,
        "handler_samples": len(live),
        "handler_p95_s": pct(live, 0.95),
        "kill10_out_of_rotation_p95_s": pct(out_of_rotation, 0.95),
        "kill10_out_of_cfg_p95_s": pct(out_of_cfg, 0.95),
        "boot_cpu_s": [round(v, 3) for v in boot],
        "boot_cpu_s_max": round(max(boot), 3) if boot else None,
        **rest,
        "slowest_tasks": tasks,
        "target_failed": 0,
        "target_up_s_max": 120.0,
        "target_rerun_s": 45.0,
        "target_down_s_max": 60.0,
        "target_reloads": 5,
        "target_handler_p95_s": 0.25,
        "target_kill10_out_of_rotation_p95_s": 3.0,
        "target_kill10_out_of_cfg_p95_s": 10.0,
        "target_boot_cpu_s_max": 0.15,
        "target_backend_memory_mib_max": 40.0,
        "target_status_s_max": 1.0,
    }


def scenario_handler_latency() -> dict[str, Any]:
    log = ha_exec("cat", "/var/log/serf.log")
    runtime = handler_live_s(log, reload=False)
    reload = handler_live_s(log, runtime=False)
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


OVERHEAD = "HAProxy on the users' path (127.0.0.1:8080) beside the backend alone and nginx"


Meter = Callable[[], float | None]
"""CPU seconds a proxy has spent so far (None where unreadable)."""


def alternate(  # noqa: PLR0913 (what to load, how long, and what to measure of each run)
    urls: dict[str, str],
    rounds: int,
    seconds: int,
    *,
    headers: tuple[str, ...] = (),
    meters: dict[str, Meter] | None = None,
    after_each: Callable[[], object] | None = None,
) -> tuple[dict[str, list[WrkRun]], dict[str, list[float]]]:
    """wrk against each of ``urls`` in turn, ``rounds`` times: the machine's noise is shared.

    Also the CPU µs per request of each run whose key has a meter, and
    ``after_each()`` called after every run.
    """
    runs: dict[str, list[WrkRun]] = {key: [] for key in urls}
    cpu: dict[str, list[float]] = {key: [] for key in meters or {}}
    for _ in range(rounds):
        for key, url in urls.items():
            meter = (meters or {}).get(key)
            before = meter() if meter else None
            run = wrk(url, seconds, headers=headers)
            after = meter() if meter else None
            if before is not None and after is not None and run.rps:
                cpu[key].append((after - before) * 1e6 / (run.rps * seconds))
            runs[key].append(run)
            if after_each:
                after_each()
    return runs, cpu


def best(prefix: str, runs: list[WrkRun]) -> dict[str, Any]:
    """The best requests/s and the best p99 of the rounds, and every round's errors."""
    p99s = [run.p99_ms for run in runs if run.p99_ms is not None]
    return {
        f"{prefix}_rps": max(run.rps for run in runs),
        f"{prefix}_p99_ms": min(p99s) if p99s else None,
        f"{prefix}_errors": sum(run.errors for run in runs),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def proxy_meters(nginx: peer.Nginx) -> dict[str, Meter]:
    """Each proxy's own CPU: HAProxy's container cgroup (the master, the handler and Serf
    are idle meanwhile), nginx's master and workers."""
    ha = docker_client().containers.get("ha").id
    return {"haproxy": lambda: container_cpu_s(ha), "nginx": nginx.cpu_s}


def cpu_figures(prefix: str, cpu: dict[str, list[float]]) -> dict[str, float | None]:
    """The median CPU µs per request of each proxy's rounds.

    Requests/s on 2 shared cores swing by a fifth from run to run; the CPU a
    proxy spends per request does not: it is its cost, whatever the noise.
    """
    return {
        f"{prefix}{path}_cpu_us_per_request": round(statistics.median(v), 1) if v else None
        for path, v in cpu.items()
    }


def keep_alive(rounds: int, seconds: int, meters: dict[str, Meter]) -> dict[str, Any]:
    """One backend alone, through HAProxy, through nginx: 16 keep-alive connections each.

    HAProxy as users reach it (127.0.0.1:8080); nginx on the host beside it
    (127.0.0.1:8090), proxying to the same backends.
    """
    runs, cpu = alternate(
        {"direct": f"http://{address('s1')}:3000/", "haproxy": URL, "nginx": peer.URL},
        rounds,
        seconds,
        meters=meters,
    )
    figures = {key: value for path, r in runs.items() for key, value in best(path, r).items()}
    figures.update(cpu_figures("", cpu))
    haproxy = ratio(figures["haproxy_rps"], figures["direct_rps"])
    nginx = ratio(figures["nginx_rps"], figures["direct_rps"])
    return {
        **figures,
        "ratio": haproxy,
        "nginx_ratio": nginx,
        "ratio_vs_nginx": ratio(figures["haproxy_rps"], figures["nginx_rps"]),  # ratio/nginx_ratio
        "target_ratio": 0.9,
        "target_ratio_vs_nginx": 1.0,
        "target_haproxy_p99_ms": figures["nginx_p99_ms"],
    }


def socket_errors(runs: list[WrkRun]) -> dict[str, int]:
    """wrk's socket errors (connect, read, write, timeout) summed over ``runs``."""
    return {kind: sum(run.socket_errors[kind] for run in runs) for kind in runs[0].socket_errors}


def close_mode(rounds: int, seconds: int, meters: dict[str, Meter]) -> dict[str, Any]:
    """Clients that close every connection: a new TCP connection per request.

    Each leaves a socket in TIME_WAIT on the host for 60 s; the runs are short
    so that the ephemeral ports are never the limit, and the TIME_WAIT counts
    (after each run, the most) and wrk's socket errors are in the result to
    show it.
    """
    counts = [time_wait()]
    runs, cpu = alternate(
        {"haproxy": URL, "nginx": peer.URL},
        rounds,
        seconds,
        headers=("Connection: close",),
        meters=meters,
        after_each=lambda: counts.append(time_wait()),
    )
    haproxy, nginx = best("close_haproxy", runs["haproxy"]), best("close_nginx", runs["nginx"])
    low, high = port_range()
    return {
        **haproxy,
        **nginx,
        "close_ratio": ratio(haproxy["close_haproxy_rps"], nginx["close_nginx_rps"]),
        "target_close_ratio": 1.0,
        "close_seconds": seconds,
        "close_socket_errors": {path: socket_errors(r) for path, r in runs.items()},
        "close_time_wait_before": counts[0][0],
        "close_time_wait_max": max(total for total, _ in counts),
        "close_time_wait_ephemeral_max": max(ephemeral for _, ephemeral in counts),
        "ephemeral_ports": high - low + 1,
        **cpu_figures("close_", cpu),
    }


def tls_and_stats(rounds: int, seconds: int) -> dict[str, Any]:
    """HTTPS beside HTTP at 127.0.0.1, and the stats page with its password."""
    # Keep-alive: TLS costs its encryption, one handshake per connection.
    runs, _ = alternate({"http": URL, "https": HTTPS_URL}, rounds, seconds)
    http_rps, https_rps = (max(run.rps for run in runs[key]) for key in ("http", "https"))
    # The stats page's CSV with the password: HAProxy checks its crypt(3) hash
    # on every request, on its one thread. One connection: 1/rps is the latency.
    header = (f"Authorization: {stats_auth()}",)
    stats_rps = max(
        wrk(STATS_URL + ";csv", seconds, connections=1, headers=header).rps for _ in range(2)
    )
    return {
        "http_rps": http_rps,
        "https_rps": https_rps,
        "https_ratio": ratio(https_rps, http_rps),
        "stats_auth_rps": stats_rps,
        "stats_auth_ms": round(1000 / stats_rps, 2) if stats_rps else None,
    }


def nginx_reloads(nginx: peer.Nginx, count: int) -> dict[str, Any]:
    """``count`` reloads of nginx, 0.2 s apart, under the reloads scenario's load (2 backends)."""
    nginx.configure(backend_addresses())
    nginx.reload()
    time.sleep(1)
    with Load(url=peer.URL) as load:
        sent, done, elapsed = peer.reload_paced(nginx, count)
    figures = load.figures()
    return {
        "nginx_reload_total": figures["total"],
        "nginx_reload_failed": figures["failed"],
        "nginx_reload_statuses": figures["statuses"],
        "nginx_reloads": done,
        "nginx_reloads_requested": sent,
        "nginx_reloads_per_s": round(sent / elapsed, 1) if elapsed else None,
    }


def missing_tool() -> str | None:
    if not shutil.which("wrk"):
        return "wrk is not installed: apt-get install wrk"
    return peer.missing()


def scenario_overhead(quick: bool) -> dict[str, Any]:
    """HAProxy's cost on the users' path, beside nginx measured in the same run.

    With 1 backend: keep-alive requests/s and p99 direct, through HAProxy and
    through nginx; clients that close every connection; HTTPS and the stats
    page. With 2 backends (as in the reloads scenario): nginx's failed
    requests during its reloads, which bench/run.py puts beside HAProxy's.
    nginx runs only inside this scenario and is stopped whatever happens.
    """
    seconds, rounds = (3, 2) if quick else (5, 5)
    reason = missing_tool()
    if reason:
        return {"name": OVERHEAD, "skipped": reason}
    playbook.scale(1)
    try:
        with peer.running(backend_addresses()) as nginx:
            meters = proxy_meters(nginx)
            figures = keep_alive(rounds, seconds, meters)
            figures.update(close_mode(rounds, 3 if quick else 5, meters))
            figures.update(tls_and_stats(rounds, seconds))
            playbook.scale(2)
            figures.update(nginx_reloads(nginx, 20 if quick else 50))
    except peer.NginxError as exc:
        return {"name": OVERHEAD, "skipped": f"nginx: {exc}"}
    return {"name": OVERHEAD, **figures}
