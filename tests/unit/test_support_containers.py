"""lbcluster_support.containers: docker exec through the SDK, with a fake client.

No Docker engine is used: the client is replaced, and the real one is never made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from lbcluster_support import containers

SRC = Path(containers.__file__).resolve().parents[1]


@dataclass
class ExecResult:
    exit_code: int
    output: bytes


@dataclass
class FakeContainer:
    files: dict[str, bytes]
    runs: list[list[str]] = field(default_factory=list)

    def exec_run(self, argv: list[str]) -> ExecResult:
        self.runs.append(argv)
        if argv[0] == "cat":
            if argv[1] in self.files:
                return ExecResult(0, self.files[argv[1]])
            return ExecResult(1, f"cat: {argv[1]}: No such file or directory\n".encode())
        if argv[0] == "false":
            return ExecResult(1, b"")
        return ExecResult(0, " ".join(argv).encode() + b"\n\xff")


class FakeClient:
    def __init__(self, names: dict[str, FakeContainer]) -> None:
        self.names = names
        self.containers = self

    def get(self, name: str) -> FakeContainer:
        return self.names[name]


@pytest.fixture
def ha(monkeypatch: pytest.MonkeyPatch) -> FakeContainer:
    container = FakeContainer(files={})
    client = FakeClient({"ha": container, "s1": FakeContainer(files={})})
    monkeypatch.setattr(containers, "docker_client", lambda: client)
    return container


def test_importing_does_not_need_an_engine(tmp_path: Path) -> None:
    """With DOCKER_HOST on a socket that does not exist, only importing succeeds."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    code = "import lbcluster_support.containers as c; print(c.BALANCER)"
    imported = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert (imported.returncode, imported.stdout) == (0, "ha\n"), imported.stderr
    code += "; c.docker_client()"
    used = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert used.returncode != 0
    assert "DockerException" in used.stderr


def test_the_client_is_made_once_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    monkeypatch.setattr(docker, "from_env", lambda: made.append(object()) or made[-1])
    containers.docker_client.cache_clear()
    try:
        first = containers.docker_client()
        assert containers.docker_client() is first
        assert made == [first]
    finally:
        containers.docker_client.cache_clear()


def test_exec_returns_the_decoded_output_whatever_the_status(ha: FakeContainer) -> None:
    assert containers.exec_in("ha", "echo", "hi") == "echo hi\n\ufffd"
    assert containers.ha_exec("cat", "/missing").startswith("cat: /missing: No such file")
    assert ha.runs == [["echo", "hi"], ["cat", "/missing"]]


def test_checked_exec_names_container_command_status_and_output(ha: FakeContainer) -> None:
    with pytest.raises(containers.ExecFailed, match=r"^ha: cat /missing -> 1: cat: /missing: "):
        containers.ha_exec("cat", "/missing", check=True)
    with pytest.raises(containers.ExecFailed, match=r"^s1: false -> 1: $"):
        containers.exec_in("s1", "false", check=True)


def test_exec_without_a_command_is_refused(ha: FakeContainer) -> None:
    with pytest.raises(ValueError, match="no command"):
        containers.exec_in("ha")


def test_handler_state_is_parsed(ha: FakeContainer) -> None:
    ha.files[containers.HANDLER_STATE] = json.dumps({"reloads": 3}).encode()
    assert containers.handler_state() == {"reloads": 3}


@pytest.mark.parametrize("content", [None, b"", b"{not json", b"[1, 2]"])
def test_handler_state_is_empty_without_a_usable_file(
    ha: FakeContainer, content: bytes | None
) -> None:
    if content is not None:
        ha.files[containers.HANDLER_STATE] = content
    assert containers.handler_state() == {}
