"""The cluster_images role against a real remote Docker engine: a Docker host in a container.

The controller (this machine's engine) builds the images, or finds them
built; the role brings them to a host whose own dockerd runs in a container
(lbcluster_support.testhosts), reached by Ansible through
``community.docker.docker`` (a connection into the host container), either
shipped (export, copy, load) or through a registry (Debian's
``docker-registry``, run here on the test network's gateway). The runs use
Ansible's JSON callback: each task's result per host, and the recap's counts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import playbook

from lbcluster_support import testhosts
from lbcluster_support.containers import docker_client

pytestmark = pytest.mark.integration

PLAYBOOK = "tests/integration/playbooks/images_to_host.yml"
TRANSFER_DIR = "/var/tmp/lbcluster"  # the role's default cluster_images_transfer_dir

missing = [program for program in ("mmdebstrap", "docker-registry") if not shutil.which(program)]
if "mmdebstrap" in missing:
    pytest.skip("mmdebstrap is not installed (.ci/run installs it)", allow_module_level=True)


class Run:
    """One ``ansible-playbook`` run, read from the JSON callback."""

    def __init__(self, stdout: str) -> None:
        self.data: dict[str, Any] = json.loads(stdout[stdout.index("{") :])
        self.tasks: list[dict[str, Any]] = [
            task for play in self.data["plays"] for task in play["tasks"]
        ]

    def result(self, task_name: str, host: str) -> dict[str, Any]:
        """The result of the task named ``task_name`` (the role's prefix left out) on ``host``."""
        for task in self.tasks:
            if task["task"]["name"].split(" : ")[-1] == task_name and host in task["hosts"]:
                result: dict[str, Any] = task["hosts"][host]
                return result
        raise AssertionError(f"no task {task_name!r} ran on {host}: {self.names()}")

    def names(self) -> list[str]:
        return [task["task"]["name"] for task in self.tasks]

    def changed(self) -> dict[str, int]:
        """Host -> the recap's ``changed`` count."""
        return {host: stats["changed"] for host, stats in self.data["stats"].items()}

    def images(self, host: str) -> tuple[str, str]:
        """The published ha and webapp names (the facts the balancer and webapp roles use)."""
        facts = self.result("Publish the image names", host)["ansible_facts"]
        return facts["cluster_images_ha"], facts["cluster_images_webapp"]


def write_inventory(path: Path, hosts: list[testhosts.DockerHost], build_dir: Path) -> Path:
    """An inventory of ``hosts`` (group docker_hosts) and the controller (localhost)."""
    inventory = {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            },
            "children": {
                "docker_hosts": {
                    "hosts": {host.name: host.inventory_vars() for host in hosts},
                    "vars": {"cluster_images_build_dir": str(build_dir)},
                }
            },
        }
    }
    path.write_text(json.dumps(inventory, indent=2), encoding="utf-8")  # JSON is YAML
    return path


def run(
    inventory: Path, monkeypatch: pytest.MonkeyPatch, *args: str, check: bool = True
) -> tuple[Run | None, str]:
    """The playbook on ``inventory`` with the JSON callback; (parsed run, raw output).

    The controller's engine builds the images when they are missing.
    """
    monkeypatch.setenv("ANSIBLE_STDOUT_CALLBACK", "ansible.posix.json")
    proc = playbook(PLAYBOOK, "-i", str(inventory), *args, check=check)
    output = proc.stdout + proc.stderr
    return (Run(proc.stdout) if proc.returncode == 0 else None), output


def archives(host: testhosts.DockerHost, build_dir: Path) -> list[str]:
    """Image archives left on the host (transfer dir) or on the controller (<build_dir>/ship)."""
    on_host = host.exec("sh", "-c", f"ls -A {TRANSFER_DIR} 2>/dev/null || true").split()
    ship = build_dir / "ship"
    on_controller = [path.name for path in ship.iterdir()] if ship.is_dir() else []
    return [f"{host.name}:{name}" for name in on_host] + [f"controller:{n}" for n in on_controller]


@pytest.fixture(scope="module")
def shipping(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[testhosts.DockerHost, Path, Path]]:
    """A Docker host on a network of its own, its inventory and the controller's build dir."""
    workdir = tmp_path_factory.mktemp("shipping")
    build_dir = workdir / "build"
    with testhosts.running_hosts(1) as hosts:
        yield hosts[0], write_inventory(workdir / "hosts.yml", hosts, build_dir), build_dir


def test_ships_the_missing_images_once(
    shipping: tuple[testhosts.DockerHost, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, inventory, build_dir = shipping
    assert host.image_tags() == set(), "a new host's engine has no image"

    first, _ = run(inventory, monkeypatch)
    assert first is not None
    ha, webapp = first.images(host.name)
    assert host.image_tags() == {ha, webapp}, "exactly the two tags, not the base image"
    controller_tags = {tag for image in docker_client().images.list() for tag in image.tags}
    assert {ha, webapp} <= controller_tags
    assert sorted(
        first.result("Load the images into the Docker host's engine", host.name)["image_names"]
    ) == sorted([ha, webapp])
    assert archives(host, build_dir) == [], "the archive is removed from both sides"
    assert first.changed()[host.name] > 0

    second, _ = run(inventory, monkeypatch)
    assert second is not None
    assert second.changed() == {host.name: 0}
    export = second.result("Export the missing images from the builder's engine", host.name)
    assert export.get("skipped"), f"nothing to ship, yet: {export}"
    assert host.image_tags() == {ha, webapp}


def test_ships_only_the_tag_a_host_lacks(
    shipping: tuple[testhosts.DockerHost, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, inventory, build_dir = shipping
    before, _ = run(inventory, monkeypatch)  # the host has both (nothing shipped, if so)
    assert before is not None
    ha, webapp = before.images(host.name)
    host.remove_image(webapp)
    assert host.image_tags() == {ha}

    again, _ = run(inventory, monkeypatch)
    assert again is not None
    exported = again.result("Export the missing images from the builder's engine", host.name)
    assert {tag for image in exported["images"] for tag in image["RepoTags"]} >= {webapp}
    assert [image["RepoTags"] for image in exported["images"]] == [[webapp]], exported["images"]
    loaded = again.result("Load the images into the Docker host's engine", host.name)
    assert loaded["image_names"] == [webapp]
    assert host.image_tags() == {ha, webapp}
    assert archives(host, build_dir) == []
    assert again.changed()[host.name] > 0


def test_a_registry_url_fails_before_anything_changes(
    shipping: tuple[testhosts.DockerHost, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, inventory, _ = shipping
    failed, output = run(
        inventory,
        monkeypatch,
        "-e",
        "cluster_images_registry=https://registry.example:5000/",
        check=False,
    )
    assert failed is None, "a registry given as a URL must fail"
    assert "expected a host and optionally a port" in output
    assert '"changed": true' not in output


@pytest.mark.skipif(
    "docker-registry" in missing, reason="docker-registry is not installed (.ci/run installs it)"
)
def test_a_registry_replaces_shipping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network = testhosts.create_network(f"{testhosts.PREFIX}-{tmp_path.name[-12:]}-reg")
    pushed: list[str] = []
    try:
        with testhosts.Registry(network.gateway, tmp_path / "registry") as registry:
            host = testhosts.start_host(
                f"{network.name}-1", network, insecure_registries=[registry.name]
            )
            try:
                inventory = write_inventory(tmp_path / "hosts.yml", [host], tmp_path / "build")
                option = ("-e", f"cluster_images_registry={registry.name}")
                first, _ = run(inventory, monkeypatch, *option)
                assert first is not None
                ha, webapp = first.images(host.name)
                pushed = [ha, webapp]
                prefix = f"{registry.name}/"
                assert ha.startswith(prefix + "lbcluster-ha:")
                assert webapp.startswith(prefix + "lbcluster-webapp:")
                for name in (ha, webapp):
                    repository, tag = name.removeprefix(prefix).split(":")
                    assert registry.tags(repository) == {tag}
                assert host.image_tags() == {ha, webapp}
                assert first.changed()[host.name] > 0
                export = first.result(
                    "Export the missing images from the builder's engine", host.name
                )
                assert export.get("skipped"), "with a registry, nothing is shipped"

                second, _ = run(inventory, monkeypatch, *option)
                assert second is not None
                assert second.changed() == {host.name: 0}
            finally:
                testhosts.remove_host(host)
    finally:
        testhosts.remove_network(network)
        for name in pushed:  # the registry's tags the role added on the controller
            docker_client().images.remove(name, noprune=True)
