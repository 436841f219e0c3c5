"""Verify the docker_host role in its test container (testinfra, docker backend)."""

from __future__ import annotations

import pytest
import testinfra

PACKAGES = ["docker.io", "python3-docker", "python3-requests", "ca-certificates"]


@pytest.fixture(scope="module")
def host():
    return testinfra.get_host("docker://docker-host-test")


@pytest.mark.parametrize("name", PACKAGES)
def test_package_is_installed(host, name):
    assert host.package(name).is_installed


def test_docker_engine_and_cli_are_installed(host):
    # Debian's docker.io puts the daemon in /usr/sbin, the client in /usr/bin.
    for path in ("/usr/sbin/dockerd", "/usr/bin/docker"):
        assert host.file(path).is_file, path
        assert host.file(path).mode & 0o111, path


def test_docker_sdk_imports_with_the_system_python(host):
    result = host.run("/usr/bin/python3 -c 'import docker, requests; print(docker.__version__)'")
    assert result.rc == 0, result.stderr
    assert result.stdout.strip()


def test_docker_group_exists(host):
    assert host.group("docker").exists


def test_listed_users_are_in_the_docker_group(host):
    assert "docker" in host.user("molecule").groups


def test_no_engine_runs_in_the_container(host):
    # docker_host_manage_service is false in this scenario, and policy-rc.d
    # kept the package scripts from starting the engine.
    assert not host.process.filter(comm="dockerd")
    assert not host.process.filter(comm="containerd")
