"""Scaling with -e webapp_count: the stats page, /nodes and the config follow."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
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


NEIGHBOURS = Path("/proc/sys/net/ipv4/neigh/default")
KERNEL_DEFAULTS = {"gc_thresh1": 128, "gc_thresh2": 512, "gc_thresh3": 1024}


def neighbour_limits() -> dict[str, int]:
    return {name: int((NEIGHBOURS / name).read_text()) for name in KERNEL_DEFAULTS}


def test_thirty_backends_in_one_call_with_room_in_the_neighbour_table(
    two_backends: Containers,
) -> None:
    """Near 30 members the kernel's shared neighbour table (1024 entries by default)
    overflowed and Serf saw members fail: the play raises its limits, and starts and
    removes the backends side by side (lbcluster_backends), one specification for all."""
    try:
        for name, value in KERNEL_DEFAULTS.items():
            (NEIGHBOURS / name).write_text(str(value))
    except OSError as exc:
        pytest.skip(f"resetting the host's neighbour table limits needs root: {exc}")
    names = {f"s{n}" for n in range(1, 31)}
    scale(30)  # returns once HAProxy serves exactly s1..s30
    assert up_servers() == names
    assert two_backends.nodes() == names
    # (30 + 2 + 2)² entries without collection, twice and four times that as limits.
    assert neighbour_limits() == {"gc_thresh1": 1156, "gc_thresh2": 2312, "gc_thresh3": 4624}
    backends = two_backends.client.containers.list(filters={"label": "io.lbcluster.role=backend"})
    assert {c.name for c in backends} == names
    assert len({c.labels["io.lbcluster.spec"] for c in backends}) == 1
    assert "changed=0" in scale(30).stdout, "a re-run changes nothing"
    scale(2)
    assert up_servers() == {"s1", "s2"}
    assert not {c.name for c in two_backends.client.containers.list(all=True)} & (
        names - {"s1", "s2"}
    )
    assert neighbour_limits()["gc_thresh3"] == 4624, "the limits are never lowered"
