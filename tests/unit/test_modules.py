"""The Ansible modules of library/: content_digest and lbcluster_converged."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from helpers import load_library_module

patch_module_args = pytest.importorskip("ansible.module_utils.testing").patch_module_args


@pytest.fixture(scope="module")
def content_digest() -> ModuleType:
    return load_library_module("content_digest")


@pytest.fixture(scope="module")
def converged() -> ModuleType:
    return load_library_module("lbcluster_converged")


def run_module(module: ModuleType, args: dict[str, Any], capsys: Any) -> tuple[int, Any]:
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        module.main()
    return int(exc.value.code or 0), json.loads(capsys.readouterr().out)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "pkg" / "lbcluster").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (root / "pkg" / "lbcluster" / "__init__.py").write_text("")
    (root / "pkg" / "lbcluster" / "a.py").write_text("A = 1\n")
    (root / "ha").mkdir()
    (root / "ha" / "run").write_text("#!/bin/sh\nexec haproxy\n")
    return root


PATHS = ["Dockerfile", "pkg", "ha"]


# --- content_digest ---------------------------------------------------------


def test_digest_is_stable(content_digest: ModuleType, tree: Path) -> None:
    value, count = content_digest.digest(str(tree), PATHS)
    assert count == 4
    assert len(value) == 64
    assert int(value, 16) >= 0
    assert content_digest.digest(str(tree), PATHS) == (value, count)
    # Order of the paths and absolute/relative spelling do not matter.
    assert content_digest.digest(str(tree), ["ha", str(tree / "pkg"), "Dockerfile"]) == (
        value,
        count,
    )


def test_digest_same_content_elsewhere(
    content_digest: ModuleType, tree: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    for rel in ["Dockerfile", "pkg/lbcluster/__init__.py", "pkg/lbcluster/a.py", "ha/run"]:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes((tree / rel).read_bytes())
    assert content_digest.digest(str(copy), PATHS) == content_digest.digest(str(tree), PATHS)


def test_digest_changes_with_content(content_digest: ModuleType, tree: Path) -> None:
    before, _ = content_digest.digest(str(tree), PATHS)
    (tree / "pkg" / "lbcluster" / "a.py").write_text("A = 2\n")
    after, _ = content_digest.digest(str(tree), PATHS)
    assert after != before


def test_digest_changes_with_a_new_or_renamed_file(content_digest: ModuleType, tree: Path) -> None:
    before, _ = content_digest.digest(str(tree), PATHS)
    (tree / "pkg" / "lbcluster" / "a.py").rename(tree / "pkg" / "lbcluster" / "b.py")
    renamed, count = content_digest.digest(str(tree), PATHS)
    assert renamed != before
    assert count == 4
    (tree / "ha" / "empty").write_text("")
    added, count = content_digest.digest(str(tree), PATHS)
    assert count == 5
    assert added not in (before, renamed)


def test_digest_changes_with_exec_bit(content_digest: ModuleType, tree: Path) -> None:
    run = tree / "ha" / "run"
    before, _ = content_digest.digest(str(tree), PATHS)
    run.chmod(0o755)
    executable, _ = content_digest.digest(str(tree), PATHS)
    assert executable != before
    run.chmod(0o700)  # any x bit is the same
    assert content_digest.digest(str(tree), PATHS)[0] == executable
    run.chmod(0o600)  # other mode bits do not count
    assert content_digest.digest(str(tree), PATHS)[0] == before


def test_digest_changes_with_salt(content_digest: ModuleType, tree: Path) -> None:
    plain, _ = content_digest.digest(str(tree), PATHS)
    assert content_digest.digest(str(tree), PATHS, "") == (plain, 4)
    a, _ = content_digest.digest(str(tree), PATHS, "lbcluster-base:0123456789ab")
    b, _ = content_digest.digest(str(tree), PATHS, "lbcluster-base:ba9876543210")
    assert len({plain, a, b}) == 3


def test_digest_ignores_python_caches(content_digest: ModuleType, tree: Path) -> None:
    before = content_digest.digest(str(tree), PATHS)
    cache = tree / "pkg" / "lbcluster" / "__pycache__"
    cache.mkdir()
    (cache / "a.cpython-311.pyc").write_bytes(b"\x00junk")
    (tree / "pkg" / "lbcluster" / "stray.pyc").write_bytes(b"\x00junk")
    (tree / "pkg" / ".pytest_cache").mkdir()
    (tree / "pkg" / ".pytest_cache" / "README.md").write_text("cache")
    (tree / "pkg" / ".mypy_cache").mkdir()
    (tree / "pkg" / ".mypy_cache" / "x.json").write_text("{}")
    assert content_digest.digest(str(tree), PATHS) == before


def test_digest_does_not_ignore_other_dotfiles(content_digest: ModuleType, tree: Path) -> None:
    before, _ = content_digest.digest(str(tree), PATHS)
    (tree / "pkg" / ".env").write_text("X=1\n")
    assert content_digest.digest(str(tree), PATHS)[0] != before


def test_digest_missing_path(content_digest: ModuleType, tree: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope: no such file or directory"):
        content_digest.digest(str(tree), ["Dockerfile", "nope"])


def test_iter_files_sorted_relative(content_digest: ModuleType, tree: Path) -> None:
    found = content_digest.iter_files(str(tree), ["pkg", "Dockerfile"])
    assert [rel for rel, _ in found] == [
        "Dockerfile",
        os.path.join("pkg", "lbcluster", "__init__.py"),
        os.path.join("pkg", "lbcluster", "a.py"),
    ]
    assert all(os.path.isabs(full) for _, full in found)


def test_content_digest_module(content_digest: ModuleType, tree: Path, capsys: Any) -> None:
    code, result = run_module(
        content_digest, {"root": str(tree), "paths": PATHS, "salt": "s", "length": 8}, capsys
    )
    assert code == 0
    value, count = content_digest.digest(str(tree), PATHS, "s")
    assert result["changed"] is False
    assert result["digest"] == value
    assert result["short"] == value[:8]
    assert result["files"] == count


@pytest.mark.parametrize("length", [3, 65])
def test_content_digest_module_bad_length(
    content_digest: ModuleType, tree: Path, capsys: Any, length: int
) -> None:
    code, result = run_module(
        content_digest, {"root": str(tree), "paths": PATHS, "length": length}, capsys
    )
    assert code == 1
    assert result["failed"] is True
    assert result["msg"] == f"length must be between 4 and 64, got {length}"


def test_content_digest_module_missing_path(
    content_digest: ModuleType, tree: Path, capsys: Any
) -> None:
    code, result = run_module(content_digest, {"root": str(tree), "paths": ["nope"]}, capsys)
    assert code == 1
    assert result["msg"].startswith(f"cannot digest ['nope'] under {tree}: ")


def test_sets_digest_each_list_as_paths_would_in_one_run(
    content_digest: ModuleType, tree: Path, capsys: Any
) -> None:
    args = {"root": str(tree), "salt": "s", "sets": {"ha": PATHS, "pkg": ["pkg"]}}
    code, result = run_module(content_digest, args, capsys)
    assert code == 0
    for name, paths in (("ha", PATHS), ("pkg", ["pkg"])):
        value, count = content_digest.digest(str(tree), paths, "s")
        assert result["sets"][name] == {"digest": value, "short": value[:12], "files": count}
    code, result = run_module(content_digest, {"root": str(tree), "sets": {"x": "pkg"}}, capsys)
    assert (code, result["msg"]) == (1, "sets: x: expected a list of paths, got 'pkg'")
    code, result = run_module(content_digest, {**args, "paths": PATHS}, capsys)
    assert (code, result["msg"]) == (1, "parameters are mutually exclusive: paths|sets")


# --- lbcluster_converged ----------------------------------------------------


def report(**overrides: Any) -> dict[str, Any]:
    base = {
        "alive_backends": ["s1", "s2"],
        "nodes": ["s1", "s2"],
        "haproxy_servers": ["s1", "s2"],
        "up_servers": ["s1", "s2"],
        "errors": [],
    }
    base.update(overrides)
    return base


def test_problems_converged(converged: ModuleType) -> None:
    assert converged.problems(report(), ["s2", "s1"]) == []
    assert converged.problems(report(**{key: [] for key in report()}), []) == []


def test_problems_missing(converged: ModuleType) -> None:
    found = converged.problems(report(up_servers=["s1"]), ["s1", "s2"])
    assert found == ["not UP in HAProxy: s2"]


def test_problems_extra_and_missing_everywhere(converged: ModuleType) -> None:
    found = converged.problems(report(), ["s1", "s3"])
    assert found == [
        "not alive in Serf: s3",
        "unexpected alive in Serf: s2",
        "not recorded in /nodes: s3",
        "unexpected recorded in /nodes: s2",
        "not in HAProxy's backend: s3",
        "unexpected in HAProxy's backend: s2",
        "not UP in HAProxy: s3",
        "unexpected UP in HAProxy: s2",
    ]


def test_problems_not_exact_ignores_extra_backends(converged: ModuleType) -> None:
    """A rolling upgrade waits for the replaced backends; the others keep serving."""
    assert converged.problems(report(), ["s1"], exact=False) == []
    found = converged.problems(report(up_servers=["s2"]), ["s1"], exact=False)
    assert found == ["not UP in HAProxy: s1"]


def test_problems_name_the_state_of_a_server_not_up(converged: ModuleType) -> None:
    members = [
        {"name": "s1", "haproxy": "UP", "check": "L7OK"},
        {"name": "s2", "haproxy": "DOWN", "check": "L4CON"},
        {"name": "s3", "haproxy": "MAINT"},
    ]
    found = converged.problems(
        report(up_servers=["s1"], members=members), ["s1", "s2", "s3"], exact=False
    )
    assert "not UP in HAProxy: s2 (DOWN, check L4CON), s3 (MAINT)" in found


def test_problems_sorted_names(converged: ModuleType) -> None:
    found = converged.problems(report(nodes=[]), ["s2", "s10", "s1"])
    assert "not recorded in /nodes: s1, s10, s2" in found


def test_problems_errors(converged: ModuleType) -> None:
    found = converged.problems(report(errors=["serf members failed: boom"]), ["s1", "s2"])
    assert found == ["status error: serf members failed: boom"]


def test_problems_empty_report(converged: ModuleType) -> None:
    assert converged.problems({}, []) == []
    assert converged.problems({"errors": ["lbcluster-status exited 1: x"]}, ["s1"]) == [
        "not alive in Serf: s1",
        "not recorded in /nodes: s1",
        "not in HAProxy's backend: s1",
        "not UP in HAProxy: s1",
        "status error: lbcluster-status exited 1: x",
    ]


CONFIG = """\
global
    master-worker
defaults
    timeout server 30s
backend nodes
    balance roundrobin
    default-server check inter 500ms fastinter 250ms downinter 500ms rise 1 fall 2
    server s2 172.18.0.4:3000 cookie s2
\tserver s1 172.18.0.3:3000
# server s9 commented out
server s8 at the start of a line is not a server line
"""


def test_config_servers(converged: ModuleType) -> None:
    assert converged.config_servers(CONFIG) == ["s1", "s2"]
    assert converged.config_servers("backend nodes\n    default-server check\n") == []


def test_problems_config_file(converged: ModuleType) -> None:
    path = "/etc/haproxy/haproxy.cfg"
    assert converged.problems(report(), ["s1", "s2"], (path, ["s1", "s2"], None)) == []
    assert converged.problems(report(), ["s1", "s2"], (path, ["s1", "s3"], None)) == [
        f"not in {path}: s2",
        f"unexpected in {path}: s3",
    ]
    assert converged.problems(report(), ["s1", "s2"], (path, [], "cannot read it")) == [
        f"not in {path}: s1, s2",
        "cannot read it",
    ]


class FakeContainer:
    """``lbcluster-status --json`` answers ``outputs`` in turn (the last one
    again and again); ``cat`` answers ``files`` in turn the same way."""

    def __init__(
        self, outputs: list[tuple[int, bytes]], files: list[tuple[int, bytes]] | None = None
    ) -> None:
        self.outputs = outputs
        self.files = files or [(1, b"cat: no such file\n")]
        self.calls: list[Any] = []

    def exec_run(self, cmd: list[str], demux: bool = False) -> Any:
        self.calls.append(cmd)
        answers = self.files if cmd[0] == "cat" else self.outputs
        count = sum(1 for c in self.calls if (c[0] == "cat") == (cmd[0] == "cat"))
        code, out = answers[min(count, len(answers)) - 1]
        return SimpleNamespace(exit_code=code, output=out)


def test_read_report(converged: ModuleType) -> None:
    container = FakeContainer([(0, json.dumps(report()).encode())])
    assert converged.read_report(container) == report()
    assert container.calls == [["lbcluster-status", "--json"]]


def test_read_report_not_json(converged: ModuleType) -> None:
    container = FakeContainer([(127, b"exec: lbcluster-status: not found\n" + b"x" * 1000)])
    result = converged.read_report(container)
    assert result["errors"][0].startswith("lbcluster-status exited 127: exec: lbcluster-status")
    assert len(result["errors"][0]) < 350


def test_read_config(converged: ModuleType) -> None:
    container = FakeContainer([], [(0, CONFIG.encode())])
    assert converged.read_config(container, "/etc/haproxy/haproxy.cfg") == (
        "/etc/haproxy/haproxy.cfg",
        ["s1", "s2"],
        None,
    )
    assert container.calls == [["cat", "--", "/etc/haproxy/haproxy.cfg"]]


def test_read_config_fails(converged: ModuleType) -> None:
    container = FakeContainer([], [(1, b"cat: /nope: No such file or directory\n")])
    assert converged.read_config(container, "/nope") == (
        "/nope",
        [],
        "cannot read /nope: cat exited 1: cat: /nope: No such file or directory",
    )


def _docker(monkeypatch: pytest.MonkeyPatch, module: ModuleType, container: FakeContainer) -> None:
    client = SimpleNamespace(containers=SimpleNamespace(get=lambda name: container))
    monkeypatch.setattr(module, "HAS_DOCKER", True)
    monkeypatch.setattr(module, "docker", SimpleNamespace(from_env=lambda: client), raising=False)


def test_converged_module_waits_until_converged(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    container = FakeContainer(
        [
            (1, json.dumps(report(up_servers=["s1"])).encode()),
            (0, json.dumps(report()).encode()),
        ]
    )
    _docker(monkeypatch, converged, container)
    code, result = run_module(
        converged, {"expected": ["s1", "s2"], "timeout": 10, "interval": 0.01}, capsys
    )
    assert code == 0
    assert result["changed"] is False
    assert result["report"] == report()
    assert len(container.calls) == 2


def test_converged_module_fails_naming_problems(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    container = FakeContainer([(1, json.dumps(report(nodes=["s1"])).encode())])
    _docker(monkeypatch, converged, container)
    code, result = run_module(
        converged, {"expected": ["s2", "s1"], "timeout": 0, "interval": 0.01}, capsys
    )
    assert code == 1
    assert result["msg"] == (
        "cluster did not converge in 0s to [s1, s2]: not recorded in /nodes: s2"
    )
    assert result["report"] == report(nodes=["s1"])


def test_converged_module_waits_for_the_config_file(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    container = FakeContainer(
        [(0, json.dumps(report()).encode())],
        [(0, b"backend nodes\n    server s1 a:1\n"), (0, CONFIG.encode())],
    )
    _docker(monkeypatch, converged, container)
    args = {
        "expected": ["s1", "s2"],
        "config_file": "/etc/haproxy/haproxy.cfg",
        "timeout": 10,
        "interval": 0.01,
    }
    code, result = run_module(converged, args, capsys)
    assert code == 0
    assert result["config_servers"] == ["s1", "s2"]
    assert container.calls.count(["cat", "--", "/etc/haproxy/haproxy.cfg"]) == 2


def test_converged_module_fails_naming_the_config_file(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    container = FakeContainer(
        [(0, json.dumps(report()).encode())], [(0, b"backend nodes\n    server s1 a:1\n")]
    )
    _docker(monkeypatch, converged, container)
    args = {"expected": ["s1", "s2"], "config_file": "/etc/haproxy/haproxy.cfg", "timeout": 0}
    code, result = run_module(converged, args, capsys)
    assert code == 1
    assert result["msg"] == (
        "cluster did not converge in 0s to [s1, s2]: not in /etc/haproxy/haproxy.cfg: s2"
    )
    assert result["config_servers"] == ["s1"]


def test_converged_module_reads_no_config_file_by_default(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    container = FakeContainer([(0, json.dumps(report()).encode())])
    _docker(monkeypatch, converged, container)
    code, result = run_module(converged, {"expected": ["s1", "s2"], "timeout": 0}, capsys)
    assert code == 0
    assert "config_servers" not in result
    assert container.calls == [["lbcluster-status", "--json"]]


def test_converged_module_negative_timeout(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _docker(monkeypatch, converged, FakeContainer([(0, b"{}")]))
    code, result = run_module(converged, {"expected": [], "timeout": -1}, capsys)
    assert code == 1
    assert result["msg"] == "timeout must be >= 0, got -1"


def test_converged_module_without_docker_sdk(
    converged: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(converged, "HAS_DOCKER", False)
    code, result = run_module(converged, {"expected": ["s1"]}, capsys)
    assert code == 1
    assert "docker" in result["msg"]
