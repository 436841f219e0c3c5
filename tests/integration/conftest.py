"""Integration fixtures: a real cluster, started by the real playbook.

Every check goes through what a user sees: HTTP on 127.0.0.1, the stats
page, files and processes inside the containers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

ROOT = Path(__file__).resolve().parents[2]
HTTP = os.environ.get("LBCLUSTER_TEST_HTTP", "http://127.0.0.1:8080")
STATS = os.environ.get("LBCLUSTER_TEST_STATS", "http://127.0.0.1:1936")
T = TypeVar("T")


def playbook(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook from the project root; print its output on failure."""
    bindir = Path(sys.executable).parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"}
    env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(bindir / "ansible-playbook"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"ansible-playbook {' '.join(args)} failed:\n{proc.stdout[-6000:]}{proc.stderr}"
        )
    return proc


def scale(count: int) -> subprocess.CompletedProcess[str]:
    return playbook("site.yml", "-e", f"webapp_count={count}")


def wait_until(probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail with its last value.

    An exception from the probe (a port not yet open, a container restarting)
    counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: T | Exception = probe()
        except Exception as exc:
            value = exc
        if value and not isinstance(value, Exception):
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def _lower(items: Any) -> dict[str, str]:
    """Header names in lower case (HAProxy sends them so over HTTP/1.1)."""
    return {str(k).lower(): str(v) for k, v in items}


def http(
    path: str = "/",
    *,
    method: str = "GET",
    base: str = HTTP,
    cookie: str | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(base + path, method=method, data=body)
    if cookie:
        request.add_header("Cookie", cookie)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers.items()), err.read()


def get_json(path: str = "/", cookie: str | None = None) -> dict[str, Any]:
    status, _, body = http(path, cookie=cookie)
    assert status == 200, f"GET {path} -> {status}: {body[:200]!r}"
    data: dict[str, Any] = json.loads(body)
    return data


def stats_servers(backend: str = "nodes") -> dict[str, str]:
    """Server name -> status, from the stats page's CSV export."""
    status, _, body = http("/;csv", base=STATS)
    assert status == 200, f"stats page answered {status}"
    text = body.decode().lstrip("# ")
    return {
        row["svname"]: row["status"]
        for row in csv.DictReader(io.StringIO(text))
        if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
    }


def up_servers() -> set[str]:
    return {name for name, status in stats_servers().items() if status.startswith("UP")}


class Containers:
    """Thin helpers over the Docker SDK (docker exec, state)."""

    def __init__(self) -> None:
        self.client = docker.from_env()

    def exec(self, name: str, *argv: str, check: bool = True) -> str:
        result = self.client.containers.get(name).exec_run(list(argv))
        output: str = result.output.decode(errors="replace")
        if check:
            assert result.exit_code == 0, (
                f"{name}: {' '.join(argv)} -> {result.exit_code}: {output}"
            )
        return output

    def read(self, name: str, path: str) -> str:
        return self.exec(name, "cat", path)

    def nodes(self, name: str = "ha") -> set[str]:
        return set(self.exec(name, "ls", "-1", "/nodes").split())

    def config_servers(self, name: str = "ha") -> set[str]:
        config = self.read(name, "/etc/haproxy/haproxy.cfg")
        return {
            line.split()[1] for line in config.splitlines() if line.strip().startswith("server ")
        }

    def event_log(self, name: str = "ha") -> str:
        return self.read(name, "/var/log/serf.log")

    def pid_of(self, name: str, program: str) -> int:
        """PID of the oldest process named ``program`` (the master / the agent); 0 if none."""
        found = self.exec(name, "pgrep", "-o", "-x", program, check=False).split()
        return int(found[0]) if found else 0

    def status(self, name: str) -> str:
        container = self.client.containers.get(name)
        return str(container.status)


@pytest.fixture(scope="session")
def containers() -> Containers:
    return Containers()


@pytest.fixture(scope="session")
def cluster(containers: Containers) -> Containers:
    """ha + s1 + s2, up and converged (the playbook waits for it)."""
    scale(2)
    return containers


@pytest.fixture
def two_backends(cluster: Containers) -> Containers:
    """Each test that changes the cluster starts from (and leaves) ha + s1 + s2."""
    scale(2)
    yield cluster
    scale(2)
