"""The lbcluster_secret_files module: a private directory of secret files in one call."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import load_library_module

patch_module_args = pytest.importorskip("ansible.module_utils.testing").patch_module_args

SECRETS = {"serf-encrypt-key": "a2V5a2V5a2V5a2V5a2V5aw==\n", "serf-rpc": "token\n"}


@pytest.fixture(scope="module")
def secret_files() -> ModuleType:
    return load_library_module("lbcluster_secret_files")


def run(module: ModuleType, args: dict[str, Any], capsys: Any) -> tuple[int, Any, str]:
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        module.main()
    out = capsys.readouterr().out
    return int(exc.value.code or 0), json.loads(out), out


def args(path: Path, **extra: Any) -> dict[str, Any]:
    owner = {"owner": os.getuid(), "group": os.getgid()}
    return {"path": str(path), "files": SECRETS, **owner, **extra}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_private_directory_then_changes_nothing(
    secret_files: ModuleType, tmp_path: Path, capsys: Any
) -> None:
    target = tmp_path / "secrets" / "webapp"
    code, result, out = run(secret_files, args(target), capsys)
    assert code == 0 and result["changed"] and result["written"] == sorted(SECRETS)
    assert mode(target) == 0o700
    for name, content in SECRETS.items():
        assert (target / name).read_text() == content
        assert mode(target / name) == 0o400
    # Nothing secret in what the module prints (the option is no_log).
    assert "token" not in out and "a2V5" not in out
    assert run(secret_files, args(target), capsys)[1] == {
        "changed": False,
        "written": [],
        "invocation": result["invocation"],
    }


def test_rewrites_only_what_differs_and_leaves_other_files(
    secret_files: ModuleType, tmp_path: Path, capsys: Any
) -> None:
    run(secret_files, args(tmp_path), capsys)
    (tmp_path / "serf-rpc").chmod(0o644)
    (tmp_path / "other").write_text("kept\n")
    tmp_path.chmod(0o755)
    rotated = {**SECRETS, "serf-encrypt-key": "bmV3bmV3bmV3bmV3bmV3bg==\n"}
    code, result, _ = run(secret_files, args(tmp_path, files=rotated), capsys)
    assert code == 0 and result["changed"]
    assert result["written"] == ["serf-encrypt-key", "serf-rpc"]
    assert (tmp_path / "serf-encrypt-key").read_text() == rotated["serf-encrypt-key"]
    assert mode(tmp_path / "serf-rpc") == 0o400 and mode(tmp_path) == 0o700
    assert (tmp_path / "other").read_text() == "kept\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_check_mode_reports_and_writes_nothing(
    secret_files: ModuleType, tmp_path: Path, capsys: Any
) -> None:
    target = tmp_path / "new"
    code, result, _ = run(secret_files, args(target, _ansible_check_mode=True), capsys)
    assert code == 0 and result["changed"] and result["written"] == sorted(SECRETS)
    assert not target.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"files": {"../escape": "x"}}, "not a file name: '../escape'"),
        ({"mode": "rw"}, "mode 'rw' is not octal"),
    ],
)
def test_bad_arguments_are_named(
    secret_files: ModuleType, tmp_path: Path, capsys: Any, extra: dict[str, Any], message: str
) -> None:
    code, result, _ = run(secret_files, args(tmp_path, **extra), capsys)
    assert code == 1 and message in result["msg"]


def test_a_file_in_the_way_fails_naming_the_path_never_the_content(
    secret_files: ModuleType, tmp_path: Path, capsys: Any
) -> None:
    blocker = tmp_path / "secrets"
    blocker.write_text("not a directory\n")
    code, result, out = run(secret_files, args(blocker), capsys)
    assert code == 1
    assert result["msg"] == f"lbcluster_secret_files: {blocker} exists and is not a directory"
    assert "token" not in out
