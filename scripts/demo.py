"""The lab's final demonstration, scripted: up, scale 2 -> 5, kill one, stop one, back to 2.

    python scripts/demo.py

Prints the status table (membership, /nodes, HAProxy) after each step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    return subprocess.run(argv, cwd=ROOT, env=env, check=check, text=True, capture_output=True)


def status(title: str, timeout: float = 30) -> None:
    """Wait (bounded) until membership, /nodes and HAProxy agree, then print the table."""
    deadline = time.monotonic() + timeout
    while True:
        proc = run("docker", "exec", "ha", "lbcluster-status", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f"\n=== {title}\n{proc.stdout.rstrip()}", flush=True)


def step(title: str, *argv: str) -> None:
    print(f"\n>>> {title}: {' '.join(argv)}", flush=True)
    started = time.monotonic()
    run(*argv)
    print(f"    done in {time.monotonic() - started:.1f} s", flush=True)


def main() -> int:
    playbook = str(BIN / "ansible-playbook")
    step("bring the cluster up", playbook, "site.yml", "-e", "webapp_count=2")
    status("ha + s1, s2")
    step("scale to 5 backends", playbook, "site.yml", "-e", "webapp_count=5")
    status("5 backends")
    step("kill s5 (a crash: member-failed)", "docker", "kill", "s5")
    status("after the kill", timeout=20)
    step("stop s4 (graceful: member-leave)", "docker", "stop", "s4")
    status("after the stop")
    step("scale back to 2", playbook, "site.yml", "-e", "webapp_count=2")
    status("back to 2 backends")
    print("\n=== the event log (last lines)")
    print(run("docker", "exec", "ha", "tail", "-n", "15", "/var/log/serf.log").stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
