"""Run ``ansible-playbook`` the way ``make`` does: from the project root, with the venv's tools.

``make`` puts the venv's ``bin`` first on ``PATH`` and exports
``ANSIBLE_CONFIG``; a tool run with the venv's Python (``.venv/bin/python
bench/run.py``, pytest from the venv) gets the same here, whether or not the
venv is activated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .project import ANSIBLE_CONFIG, ROOT

DEFAULT_TIMEOUT = 900.0
"""Seconds a playbook run may take (building both images on a slow machine included)."""

OUTPUT_TAIL = 6000
"""Characters of a failed run's standard output kept in its error message."""


class PlaybookFailed(subprocess.CalledProcessError):
    """``ansible-playbook`` exited non-zero; the message ends with what it printed."""

    def __init__(self, args: tuple[str, ...], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(proc.returncode, proc.args, proc.stdout, proc.stderr)
        self.playbook_args = args

    def __str__(self) -> str:
        head = f"ansible-playbook {' '.join(self.playbook_args)} failed (exit {self.returncode})"
        if self.stdout is None and self.stderr is None:
            return head + " (its output went to the terminal)"
        return f"{head}:\n{(self.stdout or '')[-OUTPUT_TAIL:]}{self.stderr or ''}"


def bindir() -> Path:
    """The directory of the running Python: the venv's ``bin`` when run from the venv."""
    return Path(sys.executable).parent


def environment() -> dict[str, str]:
    """``os.environ`` with the venv's ``bin`` first on ``PATH`` and the project's Ansible config."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_CONFIG), "ANSIBLE_FORCE_COLOR": "0"}
    env["PATH"] = os.pathsep.join(filter(None, [str(bindir()), env.get("PATH", "")]))
    return env


def playbook(
    *args: str,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``ansible-playbook *args`` from the project root and return the finished process.

    ``capture``: keep stdout and stderr (text) in the result rather than
    letting them reach the terminal. ``check``: raise :class:`PlaybookFailed`
    (a :class:`subprocess.CalledProcessError`) on a non-zero exit.
    ``timeout``: seconds, then :class:`subprocess.TimeoutExpired`. ``env``:
    variables added to the environment (an Ansible callback, say).
    """
    if not ANSIBLE_CONFIG.is_file():
        raise FileNotFoundError(
            f"{ANSIBLE_CONFIG}: no such file; lbcluster_support runs from the project's "
            "checkout (pip install -e .)"
        )
    executable = bindir() / "ansible-playbook"
    if not executable.is_file():
        raise FileNotFoundError(
            f"{executable}: no such file; run with the venv's Python (make venv creates it)"
        )
    proc = subprocess.run(
        [str(executable), *args],
        cwd=ROOT,
        env={**environment(), **(env or {})},
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise PlaybookFailed(args, proc)
    return proc


def scale(
    count: int,
    *,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook site.yml -e webapp_count=<count>``: ``count`` backends."""
    return playbook(
        "site.yml",
        "-e",
        f"webapp_count={count}",
        check=check,
        capture=capture,
        timeout=timeout,
        env=env,
    )
