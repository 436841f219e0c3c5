"""Operator's view: status table, handler counters, logs, the stats page as a picture."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, Containers, http, scale, wait_until

sys.path.insert(0, str(ROOT / "scripts"))
import screenshot  # the same code as `make screenshot`


def test_status_table_lists_every_member(cluster: Containers) -> None:
    table = cluster.exec("ha", "lbcluster-status")
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert rows["s1"][1:5] == ["backend", rows["s1"][2], "alive", "UP"]
    assert rows["s2"][3:5] == ["alive", "UP"]
    assert rows["ha"][1] == "balancer"
    assert "membership, /nodes and HAProxy agree" in table
    assert "last reload:" in table


def test_status_json_carries_the_handler_counters(cluster: Containers) -> None:
    report = json.loads(cluster.exec("ha", "lbcluster-status", "--json"))
    handler = report["handler"]
    assert handler["events"] >= 1
    # Backends got in either by a reload or through the Runtime API.
    assert handler.get("reloads", 0) + handler.get("runtime_adds", 0) >= 1
    assert handler["last_reload"] > 0
    assert report["config_age_s"] >= 0
    assert {m["name"]: m["haproxy"] for m in report["members"] if m["role"] == "backend"} == {
        "s1": "UP",
        "s2": "UP",
    }


def test_status_exits_non_zero_on_disagreement(cluster: Containers) -> None:
    # The handler service reconciles /nodes every second: hold it while the
    # disagreement is made, so the status sees it for sure.
    cluster.exec("ha", "s6-svc", "-d", "/etc/s6/handler")
    try:
        cluster.exec("ha", "sh", "-c", "echo 's9 10.9.9.9 3000 port=3000,role=backend' > /nodes/s9")
        result = cluster.client.containers.get("ha").exec_run(["lbcluster-status"])
        assert result.exit_code == 1
        assert b"DISAGREEMENT" in result.output
    finally:
        cluster.exec("ha", "s6-svc", "-u", "/etc/s6/handler")
    # Back up, the handler reconciles /nodes with the live membership again.
    wait_until(
        lambda: cluster.client.containers.get("ha").exec_run(["lbcluster-status"]).exit_code == 0,
        timeout=15,
    )
    assert cluster.nodes() == {"s1", "s2"}


def test_every_service_logs_to_docker_logs_with_its_name(cluster: Containers) -> None:
    marker = f"/logged-{time.monotonic_ns()}"
    assert http(marker)[0] == 404
    # A request HAProxy cannot parse is an error: the access log shows it
    # (by default it leaves out the requests that went well).
    with socket.create_connection(("127.0.0.1", 8080), timeout=5) as sock:
        sock.sendall(b"GET /\x01bad HTTP/1.1\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 400")

    def ha_log() -> list[str]:
        text = cluster.client.containers.get("ha").logs(tail=400).decode(errors="replace")
        return text.splitlines()

    wait_until(
        lambda: any(line.startswith("haproxy: ") and "<BADREQ>" in line for line in ha_log()),
        10,
    )
    assert not any(marker in line for line in ha_log()), "a request that went well: not logged"
    assert any(line.startswith("handler: ") for line in ha_log())
    s1_log = cluster.client.containers.get("s1").logs().decode(errors="replace").splitlines()
    assert any(line.startswith("webapp: listening on :3000") for line in s1_log)
    # Serf's own banner, through the serf service's logger (the launcher says
    # "waiting for the web app" only when the app is not answering yet).
    assert any(line.startswith("serf: ==> Starting Serf agent") for line in s1_log)


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium package")
def test_stats_page_screenshot_with_four_backends(cluster: Containers, tmp_path: Path) -> None:
    scale(4)
    try:
        picture = tmp_path / "stats.png"
        servers = screenshot.capture(picture)
        assert servers == ["s1", "s2", "s3", "s4"]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert picture.stat().st_size > 20_000
        # `make screenshot` writes the same picture to docs/ for the README.
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "screenshot.py"),
                str(tmp_path / "x.png"),
                "--expect",
                "s1,s2,s3,s4,s5",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1
        assert "missing from the stats page: s5" in proc.stderr
    finally:
        scale(2)
