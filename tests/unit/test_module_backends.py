"""library/lbcluster_backends: the pure parts (digest, plan, checks) and its argument errors.

The Docker side is exercised for real by the integration tests (every play
starts, replaces and removes backends through it).
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from helpers import load_library_module

patch_module_args = pytest.importorskip("ansible.module_utils.testing").patch_module_args


@pytest.fixture(scope="module")
def backends() -> ModuleType:
    return load_library_module("lbcluster_backends")


def params(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "env": {"WEBAPP_PORT": "3000"},
        "name_variable": "TAG",
        "labels": {"io.lbcluster.role": "backend"},
        "network": "lbcluster",
        "aliases": ["lbcluster-members"],
        "mounts": [{"source": "/s", "target": "/run/secrets/lbcluster", "read_only": True}],
        "restart_policy": "unless-stopped",
        "stop_timeout": 13,
    }
    return base | changes


def test_the_digest_is_stable_and_changes_with_every_option_and_the_image(
    backends: ModuleType,
) -> None:
    spec = backends.container_spec(params())
    digest = backends.spec_digest(spec, "sha256:aaa")
    assert digest == backends.spec_digest(backends.container_spec(params()), "sha256:aaa")
    assert len(digest) == 16
    assert backends.spec_digest(spec, "sha256:bbb") != digest, "a rebuilt image under one tag"
    changes: list[dict[str, Any]] = [
        {"env": {"WEBAPP_PORT": "3001"}},
        {"name_variable": "NAME"},
        {"labels": {"io.lbcluster.role": "backend", "io.lbcluster.secrets": "x"}},
        {"network": "other"},
        {"aliases": []},
        {"mounts": [{"source": "/s", "target": "/run/secrets/lbcluster", "read_only": False}]},
        {"restart_policy": "always"},
        {"stop_timeout": 14},
    ]
    for change in changes:
        other = backends.spec_digest(backends.container_spec(params(**change)), "sha256:aaa")
        assert other != digest, change


def test_the_digest_does_not_depend_on_the_order_of_dict_keys_or_value_types(
    backends: ModuleType,
) -> None:
    one = backends.container_spec(params(env={"A": "1", "B": 2}))
    two = backends.container_spec(params(env={"B": "2", "A": 1}))
    assert backends.spec_digest(one, "i") == backends.spec_digest(two, "i")


def test_plan_sorts_each_container_by_what_it_needs(backends: ModuleType) -> None:
    existing = {
        "s1": (True, "d"),  # running, current
        "s2": (True, "old"),  # running, outdated: left running
        "s3": (False, "d"),  # stopped, current: started
        "s4": (False, "old"),  # stopped, outdated: recreated
        "s5": (True, None),  # running, made before the label existed: outdated
        "x9": (True, "d"),  # not asked for: not touched
    }
    todo = backends.plan(["s1", "s2", "s3", "s4", "s5", "s6"], existing, "d")
    assert todo == {
        "create": ["s6"],
        "start": ["s3"],
        "recreate": ["s4"],
        "outdated": ["s2", "s5"],
        "ok": ["s1"],
    }


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["s1", "s 2"], "invalid container names: 's 2'"),
        (["-s1"], "invalid container names: '-s1'"),
        ([""], "invalid container names: ''"),
        (["s1", "s2", "s1"], "names given twice: s1"),
    ],
)
def test_check_names(backends: ModuleType, names: list[str], message: str) -> None:
    assert message in backends.check_names(names)


def test_check_names_accepts_docker_names(backends: ModuleType) -> None:
    assert backends.check_names(["s1", "s1-surge", "web_2.a"]) == ""


def test_run_all_tries_every_job_and_names_the_failures(backends: ModuleType) -> None:
    done: list[str] = []

    def fail() -> None:
        raise backends.DockerException("no such image")

    errors = backends.run_all(
        [("s1", lambda: done.append("s1")), ("s2", fail), ("s3", lambda: done.append("s3"))], 2
    )
    assert sorted(done) == ["s1", "s3"]
    assert errors == {"s2": "no such image"}
    assert backends.failure("start", errors) == (
        "lbcluster_backends: could not start 1 container(s): s2: no such image"
    )


def run_module(module: ModuleType, args: dict[str, Any], capsys: Any) -> tuple[int, Any]:
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        module.main()
    return int(exc.value.code or 0), json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"names": ["s1"]}, "state is started but all of the following are missing: image"),
        ({"names": ["bad name"], "state": "absent"}, "invalid container names: 'bad name'"),
        (
            {"names": ["s1"], "image": "i", "mounts": [{"target": "/x"}]},
            "a mount needs a source and a target",
        ),
    ],
)
def test_bad_arguments_fail_before_docker_is_asked(
    backends: ModuleType, args: dict[str, Any], message: str, capsys: Any
) -> None:
    code, out = run_module(backends, args | {"docker_host": "tcp://127.0.0.1:1"}, capsys)
    assert code == 1
    assert message in out["msg"]


def test_existing_reads_state_and_label_and_counts_a_container_off_the_network_outdated(
    backends: ModuleType,
) -> None:
    listed = [
        {
            "Names": ["/s1"],
            "State": "running",
            "Labels": {"io.lbcluster.spec": "d"},
            "NetworkSettings": {"Networks": {"lbcluster": {}}},
        },
        {
            "Names": ["/s2"],
            "State": "exited",
            "Labels": {"io.lbcluster.spec": "d"},
            "NetworkSettings": {"Networks": {"lbcluster": {}}},
        },
        {  # its network was removed and created again: it is on none
            "Names": ["/s3"],
            "State": "running",
            "Labels": {"io.lbcluster.spec": "d"},
            "NetworkSettings": {"Networks": {}},
        },
        {"Names": ["/other"], "State": "running", "Labels": {}},
    ]

    class Api:
        def containers(self, all: bool) -> list[dict[str, Any]]:
            assert all
            return listed

    docker_side = backends.Backends(None)
    docker_side.local.api = Api()
    assert docker_side.existing(["s1", "s2", "s3", "s4"], "lbcluster") == {
        "s1": (True, "d"),
        "s2": (False, "d"),
        "s3": (True, None),
    }
    assert docker_side.existing(["s3"], None) == {"s3": (True, "d")}, "no network: not checked"
