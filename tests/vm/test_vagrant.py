"""``vagrant up`` for real: a VM boots, site.yml provisions it, the cluster answers from it.

Run by ``make vm-test`` after ``make vm`` (QEMU, libvirt, vagrant-libvirt and
the box ``debian/bookworm64`` built from Debian's packages). The tests run in
file order on one VM: up, HTTP, HTTPS, the stats page, a second provision
that changes nothing, then destroy and nothing left running. Each step's
time is printed (``pytest -s``) and written to ``bench/results/vm.json``.

Traffic goes only to the VM's address on the private network Vagrant
created for it (``LBCLUSTER_VM_IP``, default 192.168.42.42). A machine that
cannot start a VM fails here with Vagrant's own words: never a skip.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from lbcluster_support import playbook, project, statspage

ROOT = project.ROOT
VM_IP = os.environ.get("LBCLUSTER_VM_IP", "192.168.42.42")
SECRETS = ROOT / ".vagrant" / "provisioners" / "ansible" / "inventory" / ".secrets"
RESULTS = ROOT / "bench" / "results" / "vm.json"
# Bounds that keep CI from hanging, far above what a run takes (printed).
UP_TIMEOUT = 1500
PROVISION_TIMEOUT = 900
DESTROY_TIMEOUT = 300
OUTPUT_TAIL = 6000
# No proxy from the environment: the requests go straight to the VM.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

timings: dict[str, float] = {}


def vagrant(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``vagrant *args`` in the project root, with the venv's Ansible; output captured."""
    if shutil.which("vagrant") is None:
        pytest.fail("vagrant is not installed: run `make vm` first")
    env = playbook.environment()
    env.pop("ANSIBLE_CONFIG", None)  # the Vagrantfile names ansible.cfg itself
    # Where the provisioner's time goes: the slowest tasks after each play.
    env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "12"
    try:
        return subprocess.run(
            ["vagrant", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        pytest.fail(f"vagrant {' '.join(args)}: no answer after {timeout} s:\n{out[-OUTPUT_TAIL:]}")


def timed(step: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a vagrant command, record and print its time, fail with its output if it fails."""
    start = time.monotonic()
    proc = vagrant(*args, timeout=timeout)
    timings[step] = round(time.monotonic() - start, 1)
    print(f"\n::: vm: {step}: {timings[step]} s (bound {timeout} s)")
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-OUTPUT_TAIL:]
        pytest.fail(f"vagrant {' '.join(args)} exited {proc.returncode}:\n{output}")
    return proc


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters of an ansible-playbook output, per host."""
    hosts: dict[str, dict[str, int]] = {}
    for line in output.rsplit("PLAY RECAP", maxsplit=1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match[2])}
    return hosts


def get(url: str, *, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Status and body of a GET to the VM (an HTTP error is an answer too)."""
    request = urllib.request.Request(url)
    opener = OPENER
    if context is not None:
        https = urllib.request.HTTPSHandler(context=context)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def running_leftovers() -> list[str]:
    """What a destroyed VM must not leave: QEMU, dnsmasq, active libvirt networks of Vagrant."""
    left = []
    for name in ("qemu-system", "dnsmasq"):
        found = subprocess.run(["pgrep", "-af", name], check=False, capture_output=True, text=True)
        left += [f"process {line}" for line in found.stdout.splitlines() if "pgrep" not in line]
    virsh = ["virsh", "-c", "qemu:///system", "net-list", "--name"]
    nets = subprocess.run(virsh, check=False, capture_output=True, text=True)
    left += [f"libvirt network {n}" for n in nets.stdout.split() if n]
    return left


@pytest.fixture(scope="module")
def vm() -> Iterator[None]:
    """A VM brought up from nothing by ``vagrant up``; destroyed at the end whatever happens."""
    vagrant("destroy", "-f", timeout=DESTROY_TIMEOUT)
    try:
        proc = timed("vagrant up", "up", "--provider", "libvirt", timeout=UP_TIMEOUT)
        print(proc.stdout[-2500:])
        yield
    finally:
        if "vagrant destroy" not in timings:
            vagrant("destroy", "-f", timeout=DESTROY_TIMEOUT)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"vm_ip": VM_IP, "timings_s": timings}, indent=2) + "\n")
        total = round(sum(timings.values()), 1)
        print(f"\n::: vm: timings {json.dumps(timings)} (total {total} s)")


def test_http_answers_from_both_backends_in_turn(vm: None) -> None:
    hosts = []
    for _ in range(6):
        status, body = get(f"http://{VM_IP}/")
        assert status == 200, body
        hosts.append(json.loads(body)["host"])
    assert set(hosts) == {"s1", "s2"}, hosts
    assert all(a != b for a, b in itertools.pairwise(hosts)), f"not in turn: {hosts}"


def test_https_answers_with_the_generated_certificate(vm: None) -> None:
    context = ssl.create_default_context(cafile=str(SECRETS / "tls-ca.crt"))
    status, body = get(f"https://{VM_IP}/", context=context)
    assert status == 200, body
    assert json.loads(body)["host"] in {"s1", "s2"}


def test_stats_page_answers_with_the_vms_password(vm: None) -> None:
    status, _ = get(f"http://{VM_IP}:1936/")
    assert status == 401
    authorization = statspage.authorization(statspage.password(SECRETS))
    states = statspage.server_states(authorization, url=f"http://{VM_IP}:1936")
    assert states.get("s1") == "UP" and states.get("s2") == "UP", states


def test_a_second_provision_changes_nothing(vm: None) -> None:
    proc = timed("vagrant provision", "provision", timeout=PROVISION_TIMEOUT)
    counters = recap(proc.stdout)
    assert counters, proc.stdout[-OUTPUT_TAIL:]
    changed = {host: c.get("changed") for host, c in counters.items() if c.get("changed")}
    tail = proc.stdout[-OUTPUT_TAIL:]
    assert not changed, f"changed tasks on a second provision: {changed}\n{tail}"


def test_destroy_leaves_nothing_running(vm: None) -> None:
    timed("vagrant destroy", "destroy", "-f", timeout=DESTROY_TIMEOUT)
    deadline = time.monotonic() + 30
    while (left := running_leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, left
