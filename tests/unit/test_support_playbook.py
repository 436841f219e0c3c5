"""lbcluster_support.playbook: ansible-playbook from the project root, with the venv's tools.

A fake ``ansible-playbook`` next to a fake ``sys.executable`` records how it was run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_executable

from lbcluster_support import playbook as pb
from lbcluster_support.project import ANSIBLE_CONFIG, ROOT

FAKE_PLAYBOOK = """#!/bin/sh
echo "cwd=$(pwd)"
echo "config=$ANSIBLE_CONFIG"
echo "color=$ANSIBLE_FORCE_COLOR"
echo "path=$PATH"
echo "args=$*"
echo "to stderr" >&2
[ -n "$FAKE_SLEEP" ] && sleep "$FAKE_SLEEP"
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def venv_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    make_executable(bindir / "ansible-playbook", FAKE_PLAYBOOK)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return bindir


def lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_runs_from_the_root_with_the_config_and_the_venv_first_on_path(venv_bin: Path) -> None:
    proc = pb.playbook("site.yml", "-e", "webapp_count=3")
    seen = lines(proc.stdout)
    assert Path(seen["cwd"]).resolve() == ROOT
    assert seen["config"] == str(ANSIBLE_CONFIG)
    assert seen["color"] == "0"
    assert seen["path"] == f"{venv_bin}:/usr/bin:/bin"
    assert seen["args"] == "site.yml -e webapp_count=3"
    assert proc.stderr == "to stderr\n"
    assert proc.returncode == 0


def test_scale_runs_site_yml_with_the_count(venv_bin: Path) -> None:
    assert lines(pb.scale(5).stdout)["args"] == "site.yml -e webapp_count=5"


def test_failure_raises_with_the_arguments_exit_and_output(
    venv_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EXIT", "2")
    with pytest.raises(subprocess.CalledProcessError) as caught:
        pb.playbook("site.yml", "-e", "webapp_count=-1")
    message = str(caught.value)
    assert message.startswith("ansible-playbook site.yml -e webapp_count=-1 failed (exit 2):\n")
    assert "args=site.yml -e webapp_count=-1" in message
    assert message.endswith("to stderr\n")
    assert isinstance(caught.value, pb.PlaybookFailed)
    assert caught.value.returncode == 2


def test_failure_message_keeps_the_end_of_a_long_output(venv_bin: Path) -> None:
    proc = subprocess.CompletedProcess(["ansible-playbook"], 2, "x" * 10_000 + "END", "")
    message = str(pb.PlaybookFailed(("site.yml",), proc))
    assert message.endswith("x" * (pb.OUTPUT_TAIL - 3) + "END")
    assert len(message) < pb.OUTPUT_TAIL + 100


def test_unchecked_failure_is_returned(venv_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXIT", "4")
    assert pb.playbook("site.yml", check=False).returncode == 4


def test_uncaptured_output_reaches_the_terminal(
    venv_bin: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = pb.playbook("site.yml", capture=False)
    assert proc.stdout is None
    assert "args=site.yml" in capfd.readouterr().out
    monkeypatch.setenv("FAKE_EXIT", "1")
    with pytest.raises(pb.PlaybookFailed, match="went to the terminal"):
        pb.playbook("site.yml", capture=False)


def test_timeout(venv_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "5")
    with pytest.raises(subprocess.TimeoutExpired):
        pb.playbook("site.yml", timeout=0.2)


def test_missing_ansible_playbook_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/ansible-playbook: .*venv"):
        pb.playbook("site.yml")
