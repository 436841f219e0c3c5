#!/usr/bin/python
"""Ansible module: wait until HAProxy serves exactly the expected backends."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lbcluster_converged
short_description: Wait until the cluster's HAProxy serves exactly the expected backends
description:
  - Runs C(lbcluster-status --json) inside the balancer container (through the
    Docker API) and reads the live Serf membership, the HAProxy server states
    and the /nodes records from it.
  - Returns when all of them list exactly O(expected), every server UP in
    HAProxy; fails after O(timeout) seconds naming the missing and extra backends
    (and, for a server that is not UP, its state and last check).
  - With O(exact=false), other backends may be there too: a rolling upgrade
    waits for the backends it replaced while the others keep serving.
  - Never changes anything.
requirements:
  - docker (Python SDK) on the Docker host
options:
  container:
    description: Name of the balancer container.
    type: str
    default: ha
  expected:
    description: Names of the backends that must be alive and UP, nothing more.
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait before failing.
    type: int
    default: 120
  exact:
    description: Whether backends beyond O(expected) make the cluster not converged.
    type: bool
    default: true
  interval:
    description: Seconds between two polls.
    type: float
    default: 0.5
  docker_host:
    description: Docker daemon URL; the environment (DOCKER_HOST) or the local socket by default.
    type: str
  config_file:
    description:
      - Path of a configuration file inside the container (the live
        C(/etc/haproxy/haproxy.cfg)) whose C(server) lines must also name
        exactly O(expected).
      - Not checked by default. After a Runtime API change the membership
        handler writes the file a moment later, together with /nodes.
    type: str
author:
  - lbcluster maintainers
"""

EXAMPLES = r"""
- name: Wait until HAProxy serves s1 and s2
  lbcluster_converged:
    container: ha
    expected: [s1, s2]
    timeout: 60

- name: Check once, without waiting, that haproxy.cfg agrees too
  lbcluster_converged:
    expected: [s1, s2]
    config_file: /etc/haproxy/haproxy.cfg
    timeout: 0
"""

RETURN = r"""
report:
  description: The last status report of the balancer (see C(lbcluster-status --json)).
  returned: always
  type: dict
elapsed:
  description: Seconds waited.
  returned: always
  type: float
config_servers:
  description: The names of the C(server) lines of O(config_file), as last read.
  returned: when O(config_file) is set
  type: list
  elements: str
"""

import json
import re
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import docker
    from docker.errors import DockerException

    HAS_DOCKER = True
except ImportError:  # pragma: no cover - reported through fail_json
    HAS_DOCKER = False
    DockerException = Exception


# A server line of an HAProxy configuration: indented, "server <name> ...".
SERVER_LINE = re.compile(r"^[ \t]+server[ \t]+(\S+)", re.MULTILINE)


def problems(report, expected, config=None, exact=True):
    """What keeps ``report`` from matching ``expected`` (empty list: converged).

    ``config``: ``(path, server names, error or None)`` of the configuration
    file when it is checked too; ``exact``: whether extra backends count.
    """
    want = set(expected)
    found = []
    checks = [
        ("alive in Serf", set(report.get("alive_backends", []))),
        ("recorded in /nodes", set(report.get("nodes", []))),
        # The servers of HAProxy's backend as its Runtime API lists them (they
        # include servers added at runtime, before the file follows).
        ("in HAProxy's backend", set(report.get("haproxy_servers", []))),
        ("UP in HAProxy", set(report.get("up_servers", []))),
    ]
    if config is not None:
        checks.append((f"in {config[0]}", set(config[1])))
    for label, have in checks:
        missing, extra = sorted(want - have), sorted(have - want)
        if missing and label == "UP in HAProxy":
            missing = [describe_server(report, name) for name in missing]
        if missing:
            found.append(f"not {label}: {', '.join(missing)}")
        if extra and exact:
            found.append(f"unexpected {label}: {', '.join(extra)}")
    found += [f"status error: {e}" for e in report.get("errors", [])]
    if config is not None and config[2]:
        found.append(config[2])
    return found


def describe_server(report, name):
    """``s1 (DOWN, check L4CON)``: a server's HAProxy state and last check, if known."""
    for member in report.get("members", []):
        if member.get("name") == name and member.get("haproxy"):
            check = f", check {member['check']}" if member.get("check") else ""
            return f"{name} ({member['haproxy']}{check})"
    return name


def config_servers(text):
    """The names of the ``server`` lines of an HAProxy configuration, sorted."""
    return sorted(SERVER_LINE.findall(text))


def read_config(container, path):
    """``(path, server names, error or None)`` of ``path`` inside the container."""
    result = container.exec_run(["cat", "--", path], demux=False)
    output = result.output.decode(errors="replace")
    if result.exit_code != 0:
        error = f"cannot read {path}: cat exited {result.exit_code}: {output.strip()[:300]}"
        return path, [], error
    return path, config_servers(output), None


def read_report(container):
    result = container.exec_run(["lbcluster-status", "--json"], demux=False)
    output = result.output.decode(errors="replace")
    try:
        return json.loads(output)
    except ValueError:
        return {"errors": [f"lbcluster-status exited {result.exit_code}: {output.strip()[:300]}"]}


def main():
    module = AnsibleModule(
        argument_spec={
            "container": {"type": "str", "default": "ha"},
            "expected": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "int", "default": 120},
            "exact": {"type": "bool", "default": True},
            "interval": {"type": "float", "default": 0.5},
            "docker_host": {"type": "str"},
            "config_file": {"type": "str"},
        },
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"))
    params = module.params
    if params["timeout"] < 0:
        module.fail_json(msg=f"timeout must be >= 0, got {params['timeout']}")
    started = time.monotonic()
    try:
        client = (
            docker.DockerClient(base_url=params["docker_host"])
            if params["docker_host"]
            else docker.from_env()
        )
        container = client.containers.get(params["container"])
    except DockerException as exc:
        module.fail_json(msg=f"cannot reach container {params['container']}: {exc}")
    report, config, issues = {}, None, ["no report yet"]
    while True:
        config = None
        try:
            report = read_report(container)
            if params["config_file"]:
                config = read_config(container, params["config_file"])
        except DockerException as exc:
            report = {"errors": [f"docker exec in {params['container']} failed: {exc}"]}
        issues = problems(report, params["expected"], config, params["exact"])
        elapsed = time.monotonic() - started
        if not issues or elapsed >= params["timeout"]:
            break
        time.sleep(params["interval"])
    result = {"report": report, "elapsed": round(elapsed, 2)}
    if params["config_file"]:
        result["config_servers"] = config[1] if config else []
    if issues:
        module.fail_json(
            msg=f"cluster did not converge in {params['timeout']}s to "
            f"[{', '.join(sorted(params['expected']))}{'' if params['exact'] else ', …'}]: "
            + "; ".join(issues),
            **result,
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
