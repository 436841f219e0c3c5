"""Faults: stopped, killed and restarted members; supervision restarts."""

from __future__ import annotations

import time

from conftest import Containers, get_json, playbook, up_servers, wait_until


def test_docker_stop_is_a_graceful_leave(two_backends: Containers) -> None:
    container = two_backends.client.containers.get("s2")
    container.stop(timeout=20)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, "s6 stopped every service cleanly"
    wait_until(lambda: "member-leave: s2 " in two_backends.event_log(), timeout=15)
    wait_until(lambda: two_backends.nodes() == {"s1"}, timeout=15)
    assert two_backends.config_servers() == {"s1"}
    assert {get_json()["host"] for _ in range(4)} == {"s1"}


def test_docker_kill_is_a_failure_and_removes_the_member(two_backends: Containers) -> None:
    two_backends.client.containers.get("s1").kill()
    wait_until(lambda: "member-failed: s1 " in two_backends.event_log(), timeout=30)
    wait_until(lambda: two_backends.nodes() == {"s2"}, timeout=15)
    assert two_backends.config_servers() == {"s2"}
    assert {get_json()["host"] for _ in range(4)} == {"s2"}


def test_killed_haproxy_master_is_restarted(two_backends: Containers) -> None:
    before = two_backends.pid_of("ha", "haproxy")
    two_backends.exec("ha", "kill", "-9", str(before))
    wait_until(lambda: two_backends.pid_of("ha", "haproxy") not in (0, before), timeout=10)
    # Restarted from the recorded membership, not from an empty config.
    wait_until(lambda: up_servers() == {"s1", "s2"}, timeout=15)
    assert {get_json()["host"] for _ in range(4)} == {"s1", "s2"}


def test_killed_serf_agents_are_restarted(two_backends: Containers) -> None:
    for name in ("ha", "s1"):
        before = two_backends.pid_of(name, "serf")
        two_backends.exec(name, "kill", "-9", str(before))
        wait_until(
            lambda n=name, b=before: two_backends.pid_of(n, "serf") not in (0, b), timeout=10
        )
    time.sleep(3)
    playbook("site.yml")  # converges: both backends alive and UP
    assert up_servers() == {"s1", "s2"}


def test_killed_handler_is_restarted_and_keeps_following(two_backends: Containers) -> None:
    handler = "lbcluster-handl"  # the service's process name (15 characters)
    watching = "serf: watching the agent's events"
    connects = two_backends.event_log().count(watching)
    before = two_backends.pid_of("ha", handler)
    assert before, "the handler service runs"
    two_backends.exec("ha", "kill", "-9", str(before))
    wait_until(lambda: two_backends.pid_of("ha", handler) not in (0, before), timeout=10)
    wait_until(lambda: two_backends.event_log().count(watching) > connects, timeout=10)
    two_backends.client.containers.get("s2").stop(timeout=20)
    wait_until(lambda: up_servers() == {"s1"} and two_backends.nodes() == {"s1"}, timeout=20)
    assert two_backends.config_servers() == {"s1"}


def test_killed_web_app_is_restarted_and_back_in_rotation(two_backends: Containers) -> None:
    app = "lbcluster-webap"
    before = two_backends.pid_of("s2", app)
    two_backends.exec("s2", "kill", "-9", str(before))
    wait_until(lambda: two_backends.pid_of("s2", app) not in (0, before), timeout=10)
    wait_until(lambda: {get_json()["host"] for _ in range(4)} == {"s1", "s2"}, timeout=15)


def test_restarted_balancer_lists_exactly_the_alive_backends(two_backends: Containers) -> None:
    two_backends.client.containers.get("s2").stop(timeout=20)
    two_backends.client.containers.get("ha").restart(timeout=20)
    # Health checks may take s2 out before the handler does: wait for all three.
    wait_until(
        lambda: (
            up_servers() == {"s1"}
            and two_backends.nodes() == {"s1"}
            and two_backends.config_servers() == {"s1"}
        ),
        timeout=30,
    )


def test_backends_started_before_the_balancer_end_up_in_rotation(
    two_backends: Containers,
) -> None:
    two_backends.client.containers.get("ha").remove(force=True)
    for name in ("s1", "s2"):
        two_backends.client.containers.get(name).restart(timeout=20)
    time.sleep(2)  # the backends are up and gossiping before ha exists
    playbook("site.yml")  # creates ha last; returns once s1 and s2 are UP
    assert up_servers() == {"s1", "s2"}
    assert {get_json()["host"] for _ in range(4)} == {"s1", "s2"}


def test_killed_haproxy_worker_is_replaced(two_backends: Containers) -> None:
    worker = int(
        two_backends.exec("ha", "pgrep", "-n", "-u", "haproxy", "-x", "haproxy").split()[0]
    )
    two_backends.exec("ha", "kill", "-9", str(worker))
    wait_until(
        lambda: (
            two_backends.exec("ha", "pgrep", "-u", "haproxy", "-x", "haproxy", check=False).split()[
                :1
            ]
            not in ([], [str(worker)])
        ),
        timeout=15,
    )
    wait_until(lambda: up_servers() == {"s1", "s2"}, timeout=15)
    assert {get_json()["host"] for _ in range(4)} == {"s1", "s2"}


def test_a_backend_whose_peers_did_not_answer_its_join_never_stays_isolated(
    two_backends: Containers,
) -> None:
    # s2 starts while ha and s1 cannot answer: its join of the balancer's agent
    # times out. Once they answer again, s2 must find the balancer by itself,
    # without a restart.
    cluster = two_backends
    playbook("site.yml", "-e", "webapp_count=1")
    paused = [cluster.client.containers.get(name) for name in ("ha", "s1")]
    for container in paused:
        container.pause()
    try:
        playbook(
            "site.yml",
            "--tags",
            "webapp",
            "-e",
            "webapp_count=2",
            "-e",
            "cluster_converge_timeout=1",
            check=False,
        )
        wait_until(lambda: cluster.status("s2") == "running", timeout=30)
        time.sleep(8)  # its join attempts time out while they are paused
    finally:
        for container in paused:
            container.unpause()
    wait_until(lambda: up_servers() == {"s1", "s2"}, timeout=30)
    # Serf's own retry-join (retry_join, no limit of attempts) did it.
    assert "agent: Join failed" in cluster.client.containers.get("s2").logs().decode()
