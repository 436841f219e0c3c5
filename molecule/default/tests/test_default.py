"""Verify the converged default scenario from inside the containers (testinfra, docker backend)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import testinfra

from lbcluster_support import statspage

BACKENDS = ["s1", "s2"]
SECRETS = Path(__file__).resolve().parents[3] / "inventory" / "local" / ".secrets"
# `serf members` with the RPC token of the secrets file (never on the command line).
SERF_MEMBERS = (
    "sh -c 'SERF_RPC_AUTH=$(cat /run/secrets/lbcluster/serf-rpc) serf members -format=json'"
)


def _address(hex_text):
    """An address of /proc/net/tcp{,6}: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _listeners(tables, inodes=None):
    """(address, port) of the LISTEN rows of /proc/net/tcp{,6} texts; only the sockets
    ``inodes`` names, if given."""
    found = set()
    for text in tables:
        for line in text.splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or (inodes is not None and fields[9] not in inodes):
                continue
            addr_hex, port_hex = fields[1].split(":")
            address = _address(addr_hex)
            if address == "127.0.0.11":  # Docker's embedded DNS resolver
                continue
            found.add((address, int(port_hex, 16)))
    return found


def listening(host):
    """(address, port) of the TCP sockets listening in a container's own network namespace."""
    return _listeners(host.file(t).content_string for t in ("/proc/net/tcp", "/proc/net/tcp6"))


def listening_on_the_hosts_network(container):
    """The same for a container on the host's network: only the sockets its processes hold,
    read from the host (where this test runs; root there may read any process's fds)."""
    pids = subprocess.check_output(["docker", "top", container, "-eo", "pid"], text=True)
    inodes = set()
    for pid in pids.split()[1:]:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir() if fds.exists() else ():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return _listeners((Path(t).read_text() for t in ("/proc/net/tcp", "/proc/net/tcp6")), inodes)


@pytest.fixture(scope="module")
def ha():
    return testinfra.get_host("docker://ha")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return testinfra.get_host(f"docker://{request.param}")


def test_s6_is_pid_1_of_every_container(ha, backend):
    for host in (ha, backend):
        assert host.process.get(pid=1).comm == "s6-svscan"


def test_ha_runs_haproxy_and_serf_under_s6(ha):
    supervisors = {p.pid for p in ha.process.filter(comm="s6-supervise") if p.ppid == 1}
    master = ha.process.get(comm="haproxy", user="root")
    assert master.ppid in supervisors
    assert ha.process.filter(comm="haproxy", user="haproxy"), "a worker runs as haproxy"
    assert ha.process.get(comm="serf").ppid in supervisors


def test_backend_runs_the_app_and_serf_unprivileged(backend):
    assert backend.process.get(comm="lbcluster-webap").user == "app"
    assert backend.process.get(comm="serf").user == "serf"
    assert (("0.0.0.0", 3000)) in listening(backend)


def test_serf_membership_lists_everyone_alive_with_roles(ha):
    members = json.loads(ha.check_output(SERF_MEMBERS))["members"]
    view = {m["name"]: (m["tags"].get("role"), m["status"]) for m in members}
    assert view == {
        "ha": ("balancer", "alive"),
        **{name: ("backend", "alive") for name in BACKENDS},
    }


def test_nodes_log_and_config_agree_with_the_membership(ha):
    assert sorted(ha.file("/nodes").listdir()) == BACKENDS
    config = ha.file("/etc/haproxy/haproxy.cfg").content_string
    servers = [
        line.split()[1] for line in config.splitlines() if line.strip().startswith("server ")
    ]
    assert servers == BACKENDS
    log = ha.file("/var/log/serf.log").content_string
    for name in BACKENDS:
        assert f"member-join: {name} " in log
    assert ha.run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").rc == 0


def test_http_port_answers_with_a_backend():
    with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=5) as response:
        body = json.loads(response.read())
    assert body["hello"] == "world!"
    assert body["host"] in BACKENDS


def test_stats_page_lists_every_backend_up():
    auth = statspage.authorization(statspage.password(SECRETS))
    assert statspage.server_states(auth) == {name: "UP" for name in BACKENDS}


def test_installed_files_and_permissions(ha):
    for path in ("/etc/s6/haproxy/run", "/etc/s6/serf/run"):
        assert ha.file(path).is_file
        assert ha.file(path).mode & 0o111
    assert ha.file("/usr/share/lbcluster/haproxy.cfg.j2").is_file
    assert ha.file("/run/haproxy/admin.sock").is_socket
    assert ha.file("/run/haproxy/admin.sock").mode == 0o600
    settings = ha.file("/etc/lbcluster/settings.json")
    assert json.loads(settings.content_string)["backend_name"] == "nodes"
    assert ha.exists("lbcluster-handler")


def test_secrets_are_files_only_the_agent_reads(ha, backend):
    # The balancer's launcher writes its agent's configuration (0600); a
    # backend's Serf reads serf.json of the secrets directory itself.
    for host, names in ((ha, []), (backend, ["serf.json"])):
        directory = host.file("/run/secrets/lbcluster")
        assert (directory.mode, directory.uid) == (0o700, 7946)
        for name in ["serf-encrypt-key", "serf-rpc", *names]:
            secret = host.file(f"/run/secrets/lbcluster/{name}")
            assert (secret.mode, secret.user) == (0o400, "serf")
    config = ha.file("/var/lib/serf/serf.json")
    assert (config.mode, config.user) == (0o600, "serf")


@pytest.mark.parametrize("name", BACKENDS)
def test_the_web_apps_user_cannot_read_them(name):
    app = testinfra.get_host(f"docker://app@{name}")  # docker exec -u app
    for path in ("/run/secrets/lbcluster/serf-rpc", "/run/secrets/lbcluster/serf.json"):
        assert app.run(f"cat {path}").rc != 0, path


def test_admin_api_is_not_on_tcp(ha):
    """On the host's network: HTTP, HTTPS and stats on 127.0.0.1 (the local inventory), gossip
    on the cluster network's gateway only, Serf's RPC on loopback; nothing else."""
    gateway = json.loads(
        testinfra.get_host("local://").check_output("docker network inspect lbcluster")
    )[0]["IPAM"]["Config"][0]["Gateway"]
    assert listening_on_the_hosts_network("ha") == {
        ("127.0.0.1", 8080),
        ("127.0.0.1", 8443),
        ("127.0.0.1", 1936),
        ("127.0.0.1", 7373),
        (gateway, 7946),
    }
