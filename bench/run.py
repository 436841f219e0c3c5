"""Benchmark: zero dropped requests while the cluster changes, and how fast it follows.

Runs against the cluster of `make up` (HAProxy on 127.0.0.1:8080). Load goes
only to 127.0.0.1 and to addresses of containers on the project's network;
every load loop is bounded in time and in count. Prints a table and writes
bench/results/latest.json.

    python bench/run.py [--quick] [--only reloads,burst]

This is the runner (the scenarios to run, their verdicts, the table, the
JSON); the scenarios are in bench/scenarios.py, what they measure with (load,
containers, timings, percentiles) in bench/harness.py, nginx (the peer the
overhead scenario measures HAProxy against, run on the host at
127.0.0.1:8090) in bench/peer.py. Run as a script, its directory is on
sys.path, so they import as `scenarios`, `harness` and `peer`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from harness import stats_auth
from scenarios import (
    scenario_burst,
    scenario_handler_latency,
    scenario_join_leave,
    scenario_kill_backend,
    scenario_kill_detection,
    scenario_lab_baseline,
    scenario_overhead,
    scenario_reloads,
    scenario_scale,
    scenario_scale100,
    scenario_upgrade,
)

from lbcluster_support import playbook
from lbcluster_support.containers import docker_client, ha_exec
from lbcluster_support.project import ROOT

RESULTS = ROOT / "bench" / "results"


# Targets: result[figure] must be at most / at least result[f"target_{key}"].
AT_MOST = (
    "failed",
    "p95_s",
    "leave_p95_s",
    "removed_p95_s",
    "all_serving_s",
    "reloads",
    "haproxy_p99_ms",  # its target: nginx's p99 in the same run
    "haproxy_reload_failed",
    "up_s_max",
    "rerun_s",
    "down_s_max",
    "handler_p95_s",
    "kill10_out_of_rotation_p95_s",
    "kill10_out_of_cfg_p95_s",
    "boot_cpu_s_max",
    "backend_memory_mib_max",
    "status_s_max",
    "floor_ratio",
)
AT_LEAST = ("min_reloads", "reloads_per_s", "ratio", "ratio_vs_nginx", "close_ratio")
FIGURE_OF = {"min_reloads": "reloads"}  # a target whose figure is named otherwise


def meets(value: float | None, target: float, at_most: bool) -> bool:
    if value is None:
        return False
    return value <= target if at_most else value >= target


def verdict(result: dict[str, Any]) -> str:
    """ok when every figure meets its target, MISSED when one does not (or is missing)."""
    checks = [
        meets(result.get(FIGURE_OF.get(key, key)), result[f"target_{key}"], at_most)
        for keys, at_most in ((AT_MOST, True), (AT_LEAST, False))
        for key in keys
        if result.get(f"target_{key}") is not None
    ]
    if not checks:
        return "-"
    return "ok" if all(checks) else "MISSED"


def reloads_beside_nginx(results: dict[str, dict[str, Any]]) -> None:
    """Put HAProxy's failed requests during reloads (scenario reloads) beside nginx's (overhead)."""
    reloads, overhead = results.get("reloads"), results.get("overhead")
    if reloads is None or overhead is None or "nginx_reload_failed" not in overhead:
        return
    overhead["haproxy_reload_total"] = reloads["total"]
    overhead["haproxy_reload_failed"] = reloads["failed"]
    overhead["target_haproxy_reload_failed"] = 0


def print_peer(r: dict[str, Any]) -> None:
    """HAProxy beside nginx, the figures of the overhead scenario that compare them."""
    print("\nHAProxy beside nginx (overhead; requests/s best of the rounds, p99 in ms):")
    print(
        f"  keep-alive   direct {r['direct_rps']:.0f}  haproxy {r['haproxy_rps']:.0f}"
        f" ({r['ratio']} of direct, target >= {r['target_ratio']})"
        f"  nginx {r['nginx_rps']:.0f} ({r['nginx_ratio']})"
        f"  haproxy/nginx {r['ratio_vs_nginx']} (target >= 1.0)"
    )
    print(
        f"  p99 ms       direct {r['direct_p99_ms']}  haproxy {r['haproxy_p99_ms']}"
        f"  nginx {r['nginx_p99_ms']} (target: haproxy <= nginx)"
    )
    print(
        f"  close        haproxy {r['close_haproxy_rps']:.0f}  nginx {r['close_nginx_rps']:.0f}"
        f"  haproxy/nginx {r['close_ratio']} (target >= 1.0); {r['close_seconds']} s runs,"
        f" TIME_WAIT at most {r['close_time_wait_max']} ({r['close_time_wait_ephemeral_max']}"
        f" on one of the {r['ephemeral_ports']} ephemeral ports),"
        f" wrk socket errors {r['close_socket_errors']}"
    )
    print(
        f"  CPU µs/req   keep-alive haproxy {r.get('haproxy_cpu_us_per_request')}"
        f"  nginx {r.get('nginx_cpu_us_per_request')};  close haproxy"
        f" {r.get('close_haproxy_cpu_us_per_request')}"
        f"  nginx {r.get('close_nginx_cpu_us_per_request')}"
        " (each proxy's own CPU, median of the rounds: not the machine's noise)"
    )
    haproxy = (
        f"haproxy {r['haproxy_reload_failed']} of {r['haproxy_reload_total']} (reloads)"
        if "haproxy_reload_failed" in r
        else "haproxy: run the reloads scenario too"
    )
    print(
        f"  reloads      failed requests: {haproxy}, nginx {r['nginx_reload_failed']} of"
        f" {r['nginx_reload_total']} ({r['nginx_reloads']} reloads at {r['nginx_reloads_per_s']}/s)"
    )


def print_upgrade(r: dict[str, Any]) -> None:
    """Each case of the upgrade scenario: its requests, failures, play and what it replaced."""
    print("\nUpgrades under load (upgrade; each case one run of site.yml):")
    for case in r["cases"]:
        kinds = {k: v for k, v in case["statuses"].items() if not k.startswith("2")}
        target = case["target_failed"]
        spread = case.get("backends_first_to_last_s")
        print(
            f"  {case['case']}: {case['total']} requests, {case['failed']} failed"
            f" (target {'-' if target is None else target}), failures {kinds or '-'},"
            f" play {case['play_s']} s, replaced {', '.join(case['replaced']) or '-'}"
            + (f", backends first to last {spread} s" if spread is not None else "")
            + (
                f", {case['balancer_reloads']} reloads of the same balancer"
                if case.get("balancer_reloads") is not None
                else ""
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run (about 12 minutes; the upgrade cases build images)",
    )
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
        "upgrade": lambda: scenario_upgrade(args.quick),
        "scale100": lambda: scenario_scale100(args.quick),
    }
    chosen = args.only.split(",") if args.only else list(scenarios)
    unknown = [key for key in chosen if key not in scenarios]
    if unknown:
        parser.error(f"--only: no scenario {', '.join(unknown)} (known: {', '.join(scenarios)})")
    playbook.scale(2)
    # Connect to Docker and read the stats password now, once: no scenario
    # pays for it, and a missing engine or password stops the run here.
    docker_client()
    stats_auth()
    started = time.monotonic()
    by_name: dict[str, dict[str, Any]] = {}
    for key in chosen:
        print(f"... {key}", flush=True)
        by_name[key] = scenarios[key]()
        playbook.scale(2)
    reloads_beside_nginx(by_name)
    results = [{**r, "scenario": key, "verdict": verdict(r)} for key, r in by_name.items()]
    haproxy_version = ha_exec("haproxy", "-v").splitlines()[0]
    report = {
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "haproxy": haproxy_version,
            "docker": docker_client().version().get("Version"),
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
            if k not in ("name", "scenario", "verdict", "statuses", "cases", "slowest_tasks")
            and v is not None
        }
        print(f"{r['scenario']:<10} {r['verdict']:<7} {r['name']}: {figures}")
    overhead = by_name.get("overhead", {})
    if "nginx_reload_failed" in overhead:
        print_peer(overhead)
    if "upgrade" in by_name:
        print_upgrade(by_name["upgrade"])
    print(f"\nwrote {RESULTS / 'latest.json'} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
