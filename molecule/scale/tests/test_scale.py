"""After 2 -> 5 -> 1: exactly s1 remains, everywhere."""

from __future__ import annotations

import json

import testinfra


def test_only_s1_remains():
    ha = testinfra.get_host("docker://ha")
    assert ha.file("/nodes").listdir() == ["s1"]
    members = json.loads(
        ha.check_output(
            "sh -c 'SERF_RPC_AUTH=$(cat /run/secrets/lbcluster/serf-rpc)"
            " serf members -format=json -status=alive'"
        )
    )["members"]
    assert sorted(m["name"] for m in members) == ["ha", "s1"]
    log = ha.file("/var/log/serf.log").content_string
    for name in ("s2", "s3", "s4", "s5"):
        assert f"member-leave: {name} " in log


def test_removed_backends_are_gone():
    local = testinfra.get_host("local://")
    names = local.check_output(
        "docker ps -a --filter label=io.lbcluster.role=backend --format '{{.Names}}'"
    )
    assert names.split() == ["s1"]
