"""Scaling with -e webapp_count: the stats page, /nodes and the config follow."""

from __future__ import annotations

import importlib
import sys

from conftest import ROOT, Containers, http, scale, stats_servers, up_servers, wait_until


def test_scale_up_and_down(two_backends: Containers) -> None:
    scale(4)
    # The playbook returns once HAProxy serves exactly s1..s4.
    assert up_servers() == {"s1", "s2", "s3", "s4"}
    assert two_backends.nodes() == {"s1", "s2", "s3", "s4"}
    assert two_backends.config_servers() == {"s1", "s2", "s3", "s4"}
    hosts = {http("/")[2] for _ in range(8)}
    assert len(hosts) == 8  # fresh sessions, spread over backends
    scale(2)
    assert up_servers() == {"s1", "s2"}
    assert two_backends.nodes() == {"s1", "s2"}
    assert "s3" not in two_backends.client.containers.list(all=True)
    wait_until(
        lambda: all(f"member-leave: {n} " in two_backends.event_log() for n in ("s3", "s4")),
        timeout=15,
    )


def test_no_backend_gives_503_not_a_connection_error(two_backends: Containers) -> None:
    scale(0)
    assert stats_servers() == {}
    status, _, _body = http("/")
    assert status == 503
    assert two_backends.nodes() == set()
    scale(1)
    wait_until(lambda: http("/")[0] == 200)


def test_a_backend_the_benchmark_makes_serves(two_backends: Containers) -> None:
    """bench/harness.new_backend copies s1 (image, settings, secrets): the benchmark's
    joins, kills and bursts measure nothing if its backends cannot join."""
    sys.path.insert(0, str(ROOT / "bench"))
    harness = importlib.import_module("harness")
    with harness.extra_backends(["b1"]):
        harness.new_backend("b1")
        wait_until(lambda: up_servers() == {"s1", "s2", "b1"}, timeout=30)
        two_backends.client.containers.get("b1").stop(timeout=20)
        wait_until(lambda: two_backends.nodes() == {"s1", "s2"}, timeout=20)
