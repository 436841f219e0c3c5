"""The lab's final demonstration, scripted: up, scale 2 -> 5, kill one, stop one, back to 2.

    python scripts/demo.py

Prints the status table (membership, /nodes, HAProxy) after each step.
"""

from __future__ import annotations

import subprocess
import sys
import time

from lbcluster_support.playbook import playbook
from lbcluster_support.poll import WaitTimeout, wait_until


def docker(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker *argv``, as the operator would type it; output captured."""
    return subprocess.run(["docker", *argv], check=check, text=True, capture_output=True)


def status(title: str, timeout: float = 30) -> None:
    """Wait (bounded) until membership, /nodes and HAProxy agree, then print the table."""

    def agreed_table() -> str:
        proc = docker("exec", "ha", "lbcluster-status", check=False)
        return proc.stdout if proc.returncode == 0 else ""

    try:
        table = wait_until(agreed_table, timeout, interval=0.5)
    except WaitTimeout:
        title += f" (still not in agreement after {timeout:g} s)"
        table = docker("exec", "ha", "lbcluster-status", check=False).stdout
    print(f"\n=== {title}\n{table.rstrip()}", flush=True)


def step(title: str, *argv: str) -> None:
    """Print a command and run it: ``ansible-playbook`` with the venv's tools, or ``docker``."""
    print(f"\n>>> {title}: {' '.join(argv)}", flush=True)
    started = time.monotonic()
    if argv[0] == "ansible-playbook":
        playbook(*argv[1:])
    else:
        docker(*argv[1:])
    print(f"    done in {time.monotonic() - started:.1f} s", flush=True)


def main() -> int:
    step("bring the cluster up", "ansible-playbook", "site.yml", "-e", "webapp_count=2")
    status("ha + s1, s2")
    step("scale to 5 backends", "ansible-playbook", "site.yml", "-e", "webapp_count=5")
    status("5 backends")
    step("kill s5 (a crash: member-failed)", "docker", "kill", "s5")
    status("after the kill", timeout=20)
    step("stop s4 (graceful: member-leave)", "docker", "stop", "s4")
    status("after the stop")
    step("scale back to 2", "ansible-playbook", "site.yml", "-e", "webapp_count=2")
    status("back to 2 backends")
    print("\n=== the event log (last lines)")
    print(docker("exec", "ha", "tail", "-n", "15", "/var/log/serf.log").stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
