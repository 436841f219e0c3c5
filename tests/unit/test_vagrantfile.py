"""The Vagrantfile provisions the VM with site.yml, in the groups the plays target."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = (ROOT / "Vagrantfile").read_text()


def test_provisioner_runs_site_yml_with_the_vagrant_inventory() -> None:
    assert re.search(r'config\.vm\.provision "ansible" do \|ansible\|', VAGRANTFILE)
    assert 'ansible.playbook = "site.yml"' in VAGRANTFILE
    assert (ROOT / "site.yml").is_file()
    assert '"--inventory=inventory/vagrant"' in VAGRANTFILE
    assert (ROOT / "inventory" / "vagrant" / "hosts.yml").is_file()


def test_vm_is_in_the_groups_the_plays_target() -> None:
    groups = set(re.findall(r'"([a-z_]+)" => \["default"\]', VAGRANTFILE))
    assert {"provisioned_docker_hosts", "docker_hosts"} <= groups
    targets = set()
    for playbook in (ROOT / "playbooks").glob("*.yml"):
        for play in yaml.safe_load(playbook.read_text()):
            if "hosts" in play:
                targets.add(play["hosts"])
    assert {"provisioned_docker_hosts", "docker_hosts"} <= targets


def test_vm_address_defaults_to_the_lab_address_and_can_be_overridden() -> None:
    assert 'VM_IP = ENV.fetch("LBCLUSTER_VM_IP", "192.168.42.42")' in VAGRANTFILE
    assert 'config.vm.network "private_network", ip: VM_IP' in VAGRANTFILE
    assert 'config.vm.box = "debian/bookworm64"' in VAGRANTFILE


def test_vm_site_settings_publish_on_all_addresses() -> None:
    settings = yaml.safe_load(
        (ROOT / "inventory" / "vagrant" / "group_vars" / "all" / "cluster.yml").read_text()
    )
    assert (settings["balancer_http_address"], settings["balancer_http_port"]) == ("0.0.0.0", 80)
    assert (settings["balancer_stats_address"], settings["balancer_stats_port"]) == (
        "0.0.0.0",
        1936,
    )
    assert (settings["balancer_https_address"], settings["balancer_https_port"]) == (
        "0.0.0.0",
        443,
    )


def test_vm_address_is_in_the_certificate() -> None:
    """The generated certificate covers the VM's address, the default or LBCLUSTER_VM_IP."""
    settings = yaml.safe_load(
        (ROOT / "inventory" / "vagrant" / "group_vars" / "all" / "cluster.yml").read_text()
    )
    assert settings["balancer_tls_names"] == ["{{ lbcluster_vm_ip | default('192.168.42.42') }}"]
    assert '"lbcluster_vm_ip" => VM_IP' in VAGRANTFILE
