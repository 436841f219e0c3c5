"""Security and hostile input, against the real cluster."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import stat
import tempfile
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import (
    CA,
    HTTP,
    HTTPS,
    SECRETS,
    SECRETS_MOUNT,
    STATS,
    Containers,
    get_json,
    http,
    playbook,
    stats_auth,
    stats_servers,
    tls_context,
    up_servers,
    wait_until,
)
from docker.types import Mount

from lbcluster_support import statspage

SERF_UID = 7946
"""The user serf of the images: the owner of the secrets directories on the host."""


def _ha_config(cluster: Containers) -> str:
    return cluster.read("ha", "/etc/haproxy/haproxy.cfg")


def _secret_values() -> dict[str, str]:
    """The cluster's secrets in every form they could leak in, by name."""
    gossip = (SECRETS / "serf-gossip").read_text().strip()
    return {
        "serf-gossip": gossip,
        "serf-gossip as Serf's key (base64)": base64.b64encode(gossip.encode()).decode(),
        "serf-rpc": (SECRETS / "serf-rpc").read_text().strip(),
        "stats-password": (SECRETS / "stats-password").read_text().strip(),
    }


def _leaked(text: str) -> list[str]:
    """The names of the secrets found in ``text``.

    Assert on its result, held in a variable, never on an expression holding
    ``text`` or a value: pytest would print them in the report.
    """
    return [name for name, value in _secret_values().items() if value in text]


@pytest.fixture
def wrong_key_secrets() -> Iterator[Path]:
    """An intruder's own secrets directory on the Docker host: a valid key, not the cluster's."""
    directory = Path(tempfile.mkdtemp(prefix="lbcluster-intruder-"))
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
    files = {
        "serf-encrypt-key": key,
        "serf-rpc": "intruder-token",
        "serf.json": json.dumps({"encrypt_key": key, "rpc_auth": "intruder-token"}),
    }
    for name, value in files.items():
        (directory / name).write_text(value + "\n")
        os.chown(directory / name, SERF_UID, SERF_UID)
        (directory / name).chmod(0o400)
    os.chown(directory, SERF_UID, SERF_UID)
    yield directory
    shutil.rmtree(directory)


def test_member_without_the_gossip_key_cannot_join(
    cluster: Containers, wrong_key_secrets: Path
) -> None:
    s1 = cluster.client.containers.get("s1")
    # The seeds of a real backend: the balancer's agent.
    seeds = next(
        e for e in s1.attrs["Config"]["Env"] if e.startswith("LBCLUSTER_SEEDS=")
    ).partition("=")[2]
    env = {"TAG": "intruder", "LBCLUSTER_SEEDS": seeds}
    image = s1.image
    intruder = cluster.client.containers.create(
        image,
        name="intruder",
        hostname="intruder",
        environment=env,
        mounts=[
            Mount(SECRETS_MOUNT, str(wrong_key_secrets), type="bind", read_only=True),
        ],
        labels={"io.lbcluster.cluster": "lbcluster"},
        network="lbcluster",
    )
    try:
        intruder.start()
        # Its app answers and its agent, which read its key, keeps trying to
        # join the balancer's agent for a while.
        wait_until(lambda: cluster.pid_of("intruder", "serf"), timeout=15)
        serf = cluster.pid_of("intruder", "serf")
        assert seeds in cluster.read("intruder", f"/proc/{serf}/cmdline").replace("\0", " ")
        time.sleep(8)
        members = cluster.serf_members("ha")
        assert "intruder" not in {m["name"] for m in members}
        assert "intruder" not in cluster.nodes()
        assert "intruder" not in _ha_config(cluster)
    finally:
        intruder.remove(force=True)


def test_serf_rpc_needs_its_token(cluster: Containers) -> None:
    ha = cluster.client.containers.get("ha")
    result = ha.exec_run(["serf", "members"], environment={"SERF_RPC_AUTH": "wrong"})
    assert result.exit_code != 0
    assert b"Invalid authentication token" in result.output
    # Nothing in the container's environment lets a plain `serf members` in.
    result = ha.exec_run(["serf", "members"])
    assert result.exit_code != 0, result.output


def test_no_container_mounts_the_docker_socket(cluster: Containers) -> None:
    for name in ("ha", "s1", "s2"):
        mounts = cluster.client.containers.get(name).attrs["Mounts"]
        assert not any("docker.sock" in m.get("Source", "") for m in mounts), mounts


def test_secrets_are_private_and_reused(cluster: Containers) -> None:
    before = {p.name: p.read_text() for p in SECRETS.iterdir()}
    assert set(before) == {
        "serf-gossip",
        "serf-rpc",
        "stats-password",
        "stats-password-salt",
        *TLS_FILES,
    }
    for path in SECRETS.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    playbook("site.yml")
    assert {p.name: p.read_text() for p in SECRETS.iterdir()} == before


def test_the_web_app_cannot_read_the_secrets(cluster: Containers) -> None:
    """What a compromised web app (user app in s1) can read: none of the cluster's secrets."""
    s1 = cluster.client.containers.get("s1")

    def as_app(path: str) -> tuple[int, str]:
        result = s1.exec_run(["cat", path], user="app")
        return result.exit_code, result.output.decode(errors="replace")

    serf, webapp = cluster.pid_of("s1", "serf"), cluster.pid_of("s1", "lbcluster-webap")
    assert serf and webapp, "the agent and the web app run"
    assert cluster.exec("s1", "ps", "-o", "user=", "-p", str(webapp)).split() == ["app"]
    for path in (
        f"{SECRETS_MOUNT}/serf.json",  # the agent's configuration: key and token
        f"/proc/{serf}/environ",
        f"{SECRETS_MOUNT}/serf-encrypt-key",
        f"{SECRETS_MOUNT}/serf-rpc",
    ):
        code, output = as_app(path)
        assert code != 0, f"user app read {path}"
        assert "Permission denied" in output, (path, output)
    # What the app may read holds no secret: its own environment (that of any
    # process it starts, /proc/self) and the agent's command line.
    for path in (f"/proc/{webapp}/environ", "/proc/self/environ", f"/proc/{serf}/cmdline"):
        code, output = as_app(path)
        assert code == 0, (path, output)
        leaked = _leaked(output)
        assert not leaked, f"{path} holds {leaked}"
    # The agent itself does read them: the test looked at the right places.
    assert "encrypt_key" in cluster.read("s1", f"{SECRETS_MOUNT}/serf.json")


def test_secrets_on_the_host_are_private_and_mounted_read_only(cluster: Containers) -> None:
    for name in ("ha", "s1", "s2"):
        mounts = {m["Destination"]: m for m in cluster.client.containers.get(name).attrs["Mounts"]}
        mount = mounts[SECRETS_MOUNT]
        assert (mount["Type"], mount["RW"]) == ("bind", False), mount
        directory = Path(mount["Source"])
        info = directory.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o700, 7946, 7946)
        # A backend's Serf reads both from serf.json, its configuration file.
        own = ["serf.json"] if name != "ha" else []
        assert sorted(p.name for p in directory.iterdir()) == [
            "serf-encrypt-key",
            "serf-rpc",
            *own,
        ]
        for path in directory.iterdir():
            info = path.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o400, SERF_UID), path
        # What the containers read is what the controller keeps (compared, never shown).
        values = _secret_values()
        same_token = (directory / "serf-rpc").read_text().strip() == values["serf-rpc"]
        key = (directory / "serf-encrypt-key").read_text().strip()
        same_key = key == values["serf-gossip as Serf's key (base64)"]
        assert (same_token, same_key) == (True, True), directory
        if own:
            config = json.loads((directory / "serf.json").read_text())
            same = config == {"encrypt_key": key, "rpc_auth": values["serf-rpc"]}
            assert same, f"{directory}/serf.json holds other secrets than the controller's"


def test_docker_inspect_and_logs_show_no_secret(cluster: Containers) -> None:
    for name in ("ha", "s1", "s2"):
        container = cluster.client.containers.get(name)
        inspected = json.dumps(cluster.client.api.inspect_container(container.id))
        leaked = _leaked(inspected)
        assert not leaked, f"docker inspect {name} holds {leaked}"
        leaked = _leaked(json.dumps(cluster.client.api.inspect_image(container.image.id)))
        assert not leaked, f"the image of {name} holds {leaked}"
        leaked = _leaked(container.logs().decode(errors="replace"))
        assert not leaked, f"docker logs {name} holds {leaked}"
        names = [v for v in ("LBCLUSTER_SERF_ENCRYPT_KEY", "SERF_RPC_AUTH") if v in inspected]
        assert not names, f"docker inspect {name} names {names}"


def test_the_verbose_play_shows_no_secret(cluster: Containers) -> None:
    proc = playbook("site.yml", "-vvv")
    output = proc.stdout + proc.stderr
    leaked = _leaked(output)
    assert not leaked, f"ansible-playbook -vvv printed {leaked}"
    handed = "Write the gossip key and the RPC token" in output
    assert handed, "the play handed the secrets over"


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
    # /nodes is a bind mount (shared with the next balancer): it cannot be
    # moved away. A directory where the handler removes a stale temporary
    # file fails every update, for root too (EISDIR).
    cluster.exec("ha", "mkdir", "/nodes/.blocked.tmp")
    try:
        cluster.client.containers.get("s2").stop(timeout=20)
        wait_until(lambda: "cannot record the members under /nodes" in cluster.event_log(), 20)
        assert _ha_config(cluster) == config, "the running config was put back"
        assert {get_json()["host"] for _ in range(4)} == {"s1"}  # health checks did the rest
    finally:
        cluster.exec("ha", "rmdir", "/nodes/.blocked.tmp")


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
    network.connect("s2")
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


# A second agent inside s1, with the cluster's key and the backend's Serf
# configuration (the image's and the secrets directory's), that claims to be
# a backend at ADDRESS:8080: loopback (HAProxy itself, seen from ha), or the
# network's gateway (the Docker host, whose network ha shares). It binds
# 7947, and joins the balancer's agent as the backends do (LBCLUSTER_SEEDS).
_SPOOF = """
import json, os, sys
config = json.load(open("/etc/lbcluster/serf.json"))
config.update(json.load(open("/run/secrets/lbcluster/serf.json")))
config.update(
    node_name="s9spoof",
    tags={"role": "backend", "port": "8080"},
    bind="0.0.0.0:7947",
    advertise=sys.argv[1] + ":7947",
    rpc_addr="127.0.0.1:7374",
    snapshot_path="",
    retry_join=[os.environ["LBCLUSTER_SEEDS"]],
)
json.dump(config, open("/tmp/spoof.json", "w"))
"""


@pytest.mark.parametrize(
    ("claimed", "reason"),
    [("127.0.0.1", "is a loopback address"), ("gateway", "is the balancer's own address")],
)
def test_a_member_holding_the_key_cannot_point_haproxy_at_itself_or_the_host(
    two_backends: Containers, claimed: str, reason: str
) -> None:
    cluster = two_backends
    if claimed == "gateway":
        claimed = cluster.client.networks.get("lbcluster").attrs["IPAM"]["Config"][0]["Gateway"]
    cluster.exec("s1", "python3", "-c", _SPOOF, claimed)
    spoof = cluster.client.containers.get("s1")
    spoof.exec_run(["timeout", "60", "serf", "agent", "-config-file=/tmp/spoof.json"], detach=True)
    try:
        wait_until(
            lambda: f"refused: member s9spoof: address {claimed} {reason}" in cluster.event_log(),
            timeout=30,
        )
        assert cluster.config_servers() == {"s1", "s2"}
        assert cluster.nodes() == {"s1", "s2"}
        assert up_servers() == {"s1", "s2"}
        report = json.loads(cluster.exec("ha", "lbcluster-status", "--json"))
        assert report["agree"] is True, report
        assert any("s9spoof" in w and reason in w for w in report["warnings"]), report
    finally:
        cluster.exec("s1", "pkill", "-f", "spoof.json", check=False)
    # Gone or departed, the refusal stays a warning: the exit code is about agreement.
    wait_until(
        lambda: json.loads(cluster.exec("ha", "lbcluster-status", "--json", check=False))["agree"]
    )
    table = cluster.exec("ha", "lbcluster-status")
    assert "membership, /nodes and HAProxy agree" in table


# --- TLS on the front door, and the stats password ------------------------------

TLS_FILES = ("tls-ca.key", "tls-ca.crt", "tls-server.key", "tls-server.crt")


def _https_json(base: str = HTTPS, path: str = "/") -> dict[str, object]:
    status, _, body = http(path, base=base, context=tls_context())
    assert status == 200, f"GET {base}{path} -> {status}: {body[:200]!r}"
    data: dict[str, object] = json.loads(body)
    return data


def _alpn(offer: list[str]) -> str | None:
    """The protocol the HTTPS frontend picks among ``offer`` (the certificate verified)."""
    url = urlsplit(HTTPS)
    context = tls_context()
    context.set_alpn_protocols(offer)
    with (
        socket.create_connection((url.hostname, url.port or 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=url.hostname) as tls,
    ):
        return tls.selected_alpn_protocol()


def _plain_get(path: str) -> tuple[int, str | None]:
    """GET over plain HTTP without following a redirect: (status, Location)."""
    url = urlsplit(HTTP)
    connection = HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def test_tls_https_answers_the_apps_json_verified_with_the_generated_ca(
    cluster: Containers,
) -> None:
    assert _https_json()["hello"] == "world!"
    # Both backends, as over HTTP, and by the name localhost too (in the certificate).
    assert {_https_json()["host"] for _ in range(4)} == {"s1", "s2"}
    assert _https_json(HTTPS.replace("127.0.0.1", "localhost"))["hello"] == "world!"


def test_tls_a_client_that_does_not_trust_the_ca_is_refused(cluster: Containers) -> None:
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        http("/", base=HTTPS, context=ssl.create_default_context())


def test_tls_alpn_negotiates_h2(cluster: Containers) -> None:
    assert _alpn(["h2", "http/1.1"]) == "h2"
    assert _alpn(["http/1.1"]) == "http/1.1"


def test_tls_http_still_answers_beside_https(cluster: Containers) -> None:
    assert get_json()["hello"] == "world!"
    assert _plain_get("/")[0] == 200


def test_tls_redirect_sends_plain_http_to_https(cluster: Containers) -> None:
    port = urlsplit(HTTPS).port
    try:
        playbook("site.yml", "-e", "balancer_tls_redirect=true")
        wait_until(lambda: _plain_get("/a/b?c=1")[0] == 301, timeout=10)
        assert _plain_get("/a/b?c=1") == (301, f"https://127.0.0.1:{port}/a/b?c=1")
        assert _https_json()["hello"] == "world!"
    finally:
        playbook("site.yml")
    wait_until(lambda: _plain_get("/")[0] == 200, timeout=10)
    assert get_json()["hello"] == "world!"


def test_tls_files_in_ha_are_root_only(cluster: Containers) -> None:
    modes = cluster.exec(
        "ha", "stat", "-c", "%n %a %u", "/etc/lbcluster/tls", "/etc/lbcluster/tls/server.pem"
    )
    assert modes.splitlines() == ["/etc/lbcluster/tls 700 0", "/etc/lbcluster/tls/server.pem 600 0"]
    served = cluster.read("ha", "/etc/lbcluster/tls/server.pem")
    assert served.startswith((SECRETS / "tls-server.crt").read_text())
    # The workers run as haproxy: they cannot read the key.
    denied = cluster.client.containers.get("ha").exec_run(
        ["cat", "/etc/lbcluster/tls/server.pem"], user="haproxy"
    )
    assert denied.exit_code != 0


def test_tls_certificate_files_are_private_and_unchanged_by_a_second_run(
    cluster: Containers,
) -> None:
    before = {name: (SECRETS / name).read_bytes() for name in TLS_FILES}
    for name in TLS_FILES:
        assert stat.S_IMODE((SECRETS / name).stat().st_mode) == 0o600, name
    assert CA == SECRETS / "tls-ca.crt"
    proc = playbook("site.yml")
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP") :]
    assert "changed=0" in recap, recap
    assert {name: (SECRETS / name).read_bytes() for name in TLS_FILES} == before
    assert _https_json()["hello"] == "world!"


def _served_certificate() -> bytes:
    """The DER certificate the HTTPS frontend presents (verified with the generated CA)."""
    url = urlsplit(HTTPS)
    with (
        socket.create_connection((url.hostname, url.port or 443), timeout=10) as raw,
        tls_context().wrap_socket(raw, server_hostname=url.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_tls_a_rotated_server_certificate_is_served_after_a_reload(cluster: Containers) -> None:
    """README "Rotating the certificate": remove the server's files, run the play."""
    ha = cluster.client.containers.get("ha")
    started = ha.attrs["State"]["StartedAt"]
    before = _served_certificate()
    assert before == ssl.PEM_cert_to_DER_cert((SECRETS / "tls-server.crt").read_text())
    ca = (SECRETS / "tls-ca.crt").read_bytes()
    for name in ("tls-server.crt", "tls-server.key"):
        (SECRETS / name).unlink()
    playbook("site.yml")
    issued = ssl.PEM_cert_to_DER_cert((SECRETS / "tls-server.crt").read_text())
    assert issued != before
    assert (SECRETS / "tls-ca.crt").read_bytes() == ca, "the same CA signs it"
    wait_until(lambda: _served_certificate() == issued, timeout=10)
    assert _https_json()["hello"] == "world!"
    ha.reload()
    assert ha.attrs["State"]["StartedAt"] == started, "HAProxy reloaded, no container restart"


def test_stats_password_is_only_a_hash_in_ha(cluster: Containers) -> None:
    password = statspage.password(SECRETS)
    files = {
        path: cluster.read("ha", path)
        for path in (
            "/etc/haproxy/haproxy.cfg",
            "/etc/lbcluster/haproxy.cfg",
            "/etc/lbcluster/settings.json",
        )
    }
    for path, text in files.items():
        assert password not in text, f"{path} has the stats password in clear"
        assert "insecure-password" not in text, path
    settings = json.loads(files["/etc/lbcluster/settings.json"])
    assert "stats_password" not in settings
    hashed = settings["stats_password_hash"]
    assert hashed.startswith("$6$")
    assert f"    user admin password {hashed}\n" in files["/etc/haproxy/haproxy.cfg"]


def test_stats_password_from_secrets_is_accepted_and_a_wrong_one_refused(
    cluster: Containers,
) -> None:
    wait_until(lambda: stats_servers() == {"s1": "UP", "s2": "UP"}, timeout=10)
    assert http("/metrics", base=STATS, auth=stats_auth())[0] == 200
    wrong = statspage.authorization(statspage.password(SECRETS) + "x")
    assert http("/", base=STATS, auth=wrong)[0] == 401
    assert http("/metrics", base=STATS, auth=wrong)[0] == 401


def test_a_new_gossip_key_recreates_every_container(two_backends: Containers) -> None:
    """Rotation as the README says: remove the key on the controller, run the play again."""
    cluster = two_backends
    names = ("ha", "s1", "s2")
    before = {name: cluster.client.containers.get(name).id for name in names}
    old = _secret_values()
    (SECRETS / "serf-gossip").unlink()
    playbook("site.yml")  # returns once HAProxy serves s1 and s2 again
    new = _secret_values()
    # Compared, never shown (pytest would print the values of a failed comparison).
    changed = {name: new[name] != old[name] for name in new}
    assert changed == {
        "serf-gossip": True,
        "serf-gossip as Serf's key (base64)": True,
        "serf-rpc": False,
        "stats-password": False,
    }
    for name in names:
        assert cluster.client.containers.get(name).id != before[name], f"{name} was kept"
        key = cluster.read(name, f"{SECRETS_MOUNT}/serf-encrypt-key").strip()
        same = key == new["serf-gossip as Serf's key (base64)"]
        assert same, f"{name} reads another key than the controller's"
    alive = {m["name"] for m in cluster.serf_members("ha") if m["status"] == "alive"}
    assert alive == set(names)
    assert up_servers() == {"s1", "s2"}
    assert get_json()["hello"] == "world!"
