"""The cluster after `ansible-playbook site.yml`: what a user sees."""

from __future__ import annotations

import json
import socket

from conftest import (
    HTTP,
    STATS,
    Containers,
    get_json,
    http,
    playbook,
    stats_auth,
    stats_servers,
    up_servers,
    wait_until,
)


def test_root_answers_the_json_of_a_backend(cluster: Containers) -> None:
    status, headers, body = http("/")
    assert status == 200
    data = json.loads(body)
    assert list(data) == ["hello", "ip", "host", "tag", "sessionViews", "id"]
    assert data["hello"] == "world!"
    assert data["host"] in {"s1", "s2"}
    assert data["tag"] == data["host"]
    assert data["sessionViews"] == 1
    assert headers["x-backend-ip"] == data["ip"]
    assert "NODESESSID=" in headers["set-cookie"]


def test_users_reach_haproxy_itself_and_it_sees_their_address(cluster: Containers) -> None:
    """The balancer is on the host's network: no published port, no docker-proxy between the
    user and HAProxy, so HAProxy sees (and logs) the client's own address and port."""
    ha = cluster.client.containers.get("ha")
    assert ha.attrs["HostConfig"]["NetworkMode"] == "host"
    assert not ha.attrs["HostConfig"]["PortBindings"]
    with socket.create_connection(("127.0.0.1", 8080), timeout=5) as client:
        # A malformed request: HAProxy answers 400 and logs it (errors are logged).
        client.sendall(b"GET / HTTP/1.1\r\nHost: lbcluster\r\nno colon\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 400")
        port = client.getsockname()[1]
    wait_until(lambda: f"127.0.0.1:{port} [" in ha.logs(tail=50).decode(), timeout=5)


def test_consecutive_requests_reach_both_backends(cluster: Containers) -> None:
    hosts = [get_json()["host"] for _ in range(6)]
    assert set(hosts) == {"s1", "s2"}


def test_session_views_count_per_backend_session(cluster: Containers) -> None:
    first = get_json()
    cookie = f"NODESESSID={first['id']}"
    # Round robin without sticky sessions: the session lives on one backend,
    # so the views on that backend grow and the other starts fresh sessions.
    views = [get_json(cookie=cookie) for _ in range(4)]
    same = [v for v in views if v["host"] == first["host"]]
    assert [v["sessionViews"] for v in same] == list(range(2, 2 + len(same)))
    assert all(v["id"] == first["id"] for v in same)


def test_head_is_the_health_check_and_other_paths_are_404(cluster: Containers) -> None:
    assert http("/", method="HEAD")[0] == 200
    assert http("/nope")[0] == 404


def test_delay_endpoint_validates_its_input(cluster: Containers) -> None:
    status, _, body = http("/delay", method="POST", body=b'{"delay": -5}')
    assert status == 400
    assert b"between 0 and" in body
    status, _, body = http("/delay", method="POST", body=b"{not json")
    assert status == 400
    assert http("/delay", method="POST", body=b'{"delay": 0}')[0] == 200


def test_stats_page_lists_both_backends_up(cluster: Containers) -> None:
    # A single slow check on a busy machine shows as "UP 1/2" for half a second.
    wait_until(lambda: stats_servers() == {"s1": "UP", "s2": "UP"}, timeout=10)
    status, _, body = http("/", base=STATS, auth=stats_auth())
    assert status == 200
    assert b"s1" in body and b"s2" in body


def test_stats_page_and_metrics_require_credentials(cluster: Containers) -> None:
    assert http("/", base=STATS)[0] == 401
    assert http("/metrics", base=STATS)[0] == 401
    assert http("/", base=STATS, auth="Basic YWRtaW46d3Jvbmc=")[0] == 401  # admin:wrong
    status, _, body = http("/metrics", base=STATS, auth=stats_auth())
    assert status == 200
    assert b"haproxy_server_status" in body


def test_nodes_holds_one_file_per_backend(cluster: Containers) -> None:
    assert cluster.nodes() == {"s1", "s2"}
    line = cluster.read("ha", "/nodes/s1").split()
    ip = cluster.client.containers.get("s1").attrs["NetworkSettings"]["Networks"]["lbcluster"][
        "IPAddress"
    ]
    assert line[:3] == ["s1", ip, "3000"]


def test_event_log_records_the_joins(cluster: Containers) -> None:
    # Serf coalesces member events for about a second: the backends may
    # already serve (join hint, Runtime API) when the event is logged.
    wait_until(
        lambda: all(f"member-join: {n} " in cluster.event_log() for n in ("s1", "s2")),
        timeout=15,
    )
    assert "role=backend" in cluster.event_log()


def test_rendered_config_has_one_server_line_per_backend(cluster: Containers) -> None:
    assert cluster.config_servers() == {"s1", "s2"}
    cluster.exec("ha", "haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg")


def test_ansible_and_the_handler_render_the_same_template(cluster: Containers) -> None:
    """The bootstrap config (Ansible's template module) equals the handler's rendering."""
    script = (
        "from pathlib import Path; from lbcluster.render import render_config, load_settings;"
        "print(render_config(Path('/usr/share/lbcluster/haproxy.cfg.j2'),"
        " load_settings(Path('/etc/lbcluster/settings.json')), []), end='')"
    )
    by_handler = cluster.exec("ha", "python3", "-c", script)
    by_ansible = cluster.read("ha", "/etc/lbcluster/haproxy.cfg")
    assert by_handler == by_ansible


def test_s6_is_pid_1_and_supervises_the_services(cluster: Containers) -> None:
    for name, programs in (("ha", {"haproxy", "serf"}), ("s1", {"serf", "lbcluster-webap"})):
        ps = cluster.exec(name, "ps", "-eo", "pid,ppid,user,comm", "--no-headers")
        rows = [line.split() for line in ps.splitlines()]
        by_pid = {int(r[0]): r for r in rows}
        assert by_pid[1][3] == "s6-svscan", ps
        supervisors = {pid for pid, r in by_pid.items() if r[3] == "s6-supervise" and r[1] == "1"}
        supervised = {r[3] for r in rows if int(r[1]) in supervisors}
        assert programs <= supervised, ps
    app_users = cluster.exec("s1", "ps", "-o", "user=", "-C", "lbcluster-webap").split()
    assert set(app_users) == {"app"}, "the web app runs unprivileged"
    for name in ("s1", "ha"):
        agent_users = cluster.exec(name, "ps", "-o", "user=", "-C", "serf").split()
        assert set(agent_users) == {"serf"}, f"{name}: the Serf agent runs as its own user"
    worker_users = cluster.exec("ha", "ps", "-o", "user=", "-C", "haproxy").split()
    assert "haproxy" in worker_users, "HAProxy's worker drops privileges"


def test_serf_members_lists_everyone_with_roles(cluster: Containers) -> None:
    members = cluster.serf_members("ha")
    roles = {m["name"]: (m["tags"]["role"], m["status"]) for m in members}
    assert roles["ha"] == ("balancer", "alive")
    assert roles["s1"] == ("backend", "alive")
    assert roles["s2"] == ("backend", "alive")


def test_status_command_agrees(cluster: Containers) -> None:
    report = json.loads(cluster.exec("ha", "lbcluster-status", "--json"))
    assert report["agree"] is True
    assert report["up_servers"] == ["s1", "s2"]


def test_second_run_changes_nothing(cluster: Containers) -> None:
    proc = playbook("site.yml")
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP") :]
    assert "changed=0" in recap, recap
    assert "failed=0" in recap, recap
    assert up_servers() == {"s1", "s2"}
    wait_until(lambda: get_json()["hello"] == "world!")
    assert HTTP.startswith("http://127.0.0.1")
