"""Commands and files inside the cluster's containers, through the Docker SDK.

What ``docker exec`` does, from Python. The Docker client is made on first
use, not at import: ``docker.from_env()`` asks the engine for its API
version, and importing this module must not need an engine
(``python bench/run.py --help``, the unit tests).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import docker

BALANCER = "ha"
"""The container that runs HAProxy, Serf and the handler."""

HANDLER_STATE = "/run/lbcluster/state.json"
"""The handler's state file in the balancer (its reload counter among others)."""


class ExecFailed(RuntimeError):
    """A command run in a container exited non-zero."""


@functools.cache
def docker_client() -> docker.DockerClient:
    """The Docker client of the environment (``DOCKER_HOST``…), made on the first call."""
    return docker.from_env()


def exec_in(name: str, *argv: str, check: bool = False) -> str:
    """Run ``argv`` in container ``name``; its output (stdout and stderr, decoded).

    Like ``docker exec``, the output is returned whatever the exit status;
    with ``check``, a non-zero exit raises :class:`ExecFailed` naming the
    container, the command, the status and the output.
    """
    if not argv:
        raise ValueError(f"exec_in({name!r}): no command given")
    result = docker_client().containers.get(name).exec_run(list(argv))
    output = str(result.output.decode(errors="replace"))
    if check and result.exit_code != 0:
        raise ExecFailed(f"{name}: {' '.join(argv)} -> {result.exit_code}: {output}")
    return output


def ha_exec(*argv: str, check: bool = False) -> str:
    """:func:`exec_in` the balancer (``ha``)."""
    return exec_in(BALANCER, *argv, check=check)


def handler_state(name: str = BALANCER) -> dict[str, Any]:
    """The handler's state file in ``name``, parsed; empty while there is none (or not JSON)."""
    try:
        data = json.loads(exec_in(name, "cat", HANDLER_STATE))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
