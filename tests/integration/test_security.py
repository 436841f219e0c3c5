"""Security and hostile input, against the real cluster."""

from __future__ import annotations

import json
import stat
import time

from conftest import SECRETS, Containers, get_json, playbook, up_servers, wait_until


def _ha_config(cluster: Containers) -> str:
    return cluster.read("ha", "/etc/haproxy/haproxy.cfg")


def test_member_without_the_gossip_key_cannot_join(cluster: Containers) -> None:
    image = cluster.client.containers.get("s1").image
    env = {
        "TAG": "intruder",
        "LBCLUSTER_SEEDS": "lbcluster-members",
        # base64 of 32 bytes, but not the cluster's key
        "LBCLUSTER_SERF_ENCRYPT_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    }
    intruder = cluster.client.containers.create(
        image,
        name="intruder",
        hostname="intruder",
        environment=env,
        labels={"io.lbcluster.cluster": "lbcluster"},
        network="lbcluster",
    )
    cluster.client.api.disconnect_container_from_network(intruder.id, "lbcluster")
    cluster.client.api.connect_container_to_network(
        intruder.id, "lbcluster", aliases=["lbcluster-members"]
    )
    try:
        intruder.start()
        # Its app answers and its agent keeps trying to join for a while.
        wait_until(
            lambda: (
                "lbcluster-members" in cluster.exec("intruder", "cat", "/var/lib/serf/serf.json")
            )
        )
        time.sleep(8)
        members = json.loads(cluster.exec("ha", "serf", "members", "-format=json"))["members"]
        assert "intruder" not in {m["name"] for m in members}
        assert "intruder" not in cluster.nodes()
        assert "intruder" not in _ha_config(cluster)
    finally:
        intruder.remove(force=True)


def test_serf_rpc_needs_its_token(cluster: Containers) -> None:
    result = cluster.client.containers.get("ha").exec_run(
        ["serf", "members"], environment={"SERF_RPC_AUTH": "wrong"}
    )
    assert result.exit_code != 0
    assert b"Invalid authentication token" in result.output


def test_no_container_mounts_the_docker_socket(cluster: Containers) -> None:
    for name in ("ha", "s1", "s2"):
        mounts = cluster.client.containers.get(name).attrs["Mounts"]
        assert not any("docker.sock" in m.get("Source", "") for m in mounts), mounts


def test_secrets_are_private_and_reused(cluster: Containers) -> None:
    before = {p.name: p.read_text() for p in SECRETS.iterdir()}
    assert set(before) == {"serf-gossip", "serf-rpc", "stats-password"}
    for path in SECRETS.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    playbook("site.yml")
    assert {p.name: p.read_text() for p in SECRETS.iterdir()} == before


def test_wrong_variables_fail_first_and_change_nothing(cluster: Containers) -> None:
    ids = {c.name: c.id for c in cluster.client.containers.list(all=True)}
    for extra, message in (
        ("webapp_count=-1", "webapp_count=-1 is invalid"),
        ("balancer_http_port=70000", "balancer_http_port=70000 is invalid"),
        ("cluster_network_subnet=10.1.2/33", "cluster_network_subnet=10.1.2/33 is invalid"),
    ):
        proc = playbook("site.yml", "-e", extra, check=False)
        assert proc.returncode != 0
        assert message in proc.stdout, proc.stdout[-2000:]
        assert "changed=0" in proc.stdout[proc.stdout.rindex("PLAY RECAP") :]
    assert {c.name: c.id for c in cluster.client.containers.list(all=True)} == ids


def _handler(cluster: Containers, event: str, stdin: str) -> tuple[int, str]:
    result = cluster.client.containers.get("ha").exec_run(
        ["sh", "-c", 'printf "%b" "$INPUT" | lbcluster-handler'],
        environment={"SERF_EVENT": event, "INPUT": stdin},
    )
    return result.exit_code, result.output.decode(errors="replace")


def test_hostile_event_lines_are_refused_and_the_rest_applies(cluster: Containers) -> None:
    config = _ha_config(cluster)
    hostile = (
        "evil name\\t10.0.0.9\\t\\trole=backend,port=80\\n"
        "s9\\t10.0.0.9\\n"  # malformed: 2 fields
        "x\\tfe80::1%%eth0\\\\nserver evil 6.6.6.6:80\\t\\trole=backend,port=80\\n"
        "s1\\t172.18.0.250\\t\\trole=backend,port=3000\\n"
    )
    code, _ = _handler(cluster, "member-join", hostile)
    assert code == 0
    log = cluster.event_log()
    assert "refused: invalid member name 'evil name'" in log
    assert "refused: malformed member line" in log
    # The live membership is the truth: the config did not change, and is valid.
    assert _ha_config(cluster) == config
    assert "evil" not in config
    cluster.exec("ha", "haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg")
    assert up_servers() == {"s1", "s2"}


def test_unknown_event_is_an_error_that_changes_nothing(cluster: Containers) -> None:
    config = _ha_config(cluster)
    code, _ = _handler(cluster, "member-explode", "")
    assert code == 2
    assert "error: SERF_EVENT is 'member-explode'" in cluster.event_log()
    assert _ha_config(cluster) == config
    assert get_json()["hello"] == "world!"


def test_unwritable_nodes_keeps_the_last_good_config(two_backends: Containers) -> None:
    cluster = two_backends
    config = _ha_config(cluster)
    cluster.exec("ha", "sh", "-c", "mv /nodes /nodes.saved && touch /nodes")
    try:
        cluster.client.containers.get("s2").stop(timeout=20)
        wait_until(lambda: "cannot record the members under /nodes" in cluster.event_log(), 20)
        assert _ha_config(cluster) == config, "the running config was put back"
        assert {get_json()["host"] for _ in range(4)} == {"s1"}  # health checks did the rest
    finally:
        cluster.exec("ha", "sh", "-c", "rm -f /nodes && mv /nodes.saved /nodes")


def test_partition_removes_the_backend_and_healing_brings_it_back(
    two_backends: Containers,
) -> None:
    cluster = two_backends
    network = cluster.client.networks.get("lbcluster")
    network.disconnect("s2")
    wait_until(lambda: cluster.nodes() == {"s1"}, timeout=30)
    # The handler may see s2 gone (reading the membership every second)
    # before Serf's coalesced member-failed event arrives; both happen.
    wait_until(lambda: "member-failed: s2 " in cluster.event_log(), timeout=15)
    network.connect("s2", aliases=["lbcluster-members"])
    # A re-joining backend is UP (Runtime API) a moment before /nodes records it.
    wait_until(lambda: up_servers() == {"s1", "s2"} and cluster.nodes() == {"s1", "s2"}, 60)


def test_no_zombies_nor_piled_up_workers_after_many_changes(two_backends: Containers) -> None:
    cluster = two_backends
    deadline = time.monotonic() + 60
    rounds = 0
    while time.monotonic() < deadline and rounds < 6:
        cluster.client.containers.get("s2").stop(timeout=20)
        wait_until(lambda: cluster.nodes() == {"s1"}, timeout=20)
        cluster.client.containers.get("s2").start()
        wait_until(lambda: up_servers() == {"s1", "s2"}, timeout=30)
        rounds += 1
    assert rounds >= 3
    ps = cluster.exec("ha", "ps", "-eo", "stat=,comm=")
    assert not [line for line in ps.splitlines() if line.strip().startswith("Z")], ps
    config = cluster.read("ha", "/etc/haproxy/haproxy.cfg")
    assert "hard-stop-after" in config
    # master + current worker, plus at most the old worker of the last reload
    wait_until(lambda: cluster.exec("ha", "pgrep", "-c", "-x", "haproxy").strip() == "2", 40)
