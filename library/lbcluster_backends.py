#!/usr/bin/python
"""Ansible module: run, or remove, many containers of one specification side by side."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lbcluster_backends
short_description: Run, or remove, many containers of one specification side by side
description:
  - One call for a hundred backends. Each C(community.docker.docker_container)
    call costs its own module start (0.4 to 1.6 s here, one after another):
    starting 98 backends took 134 s that way, removing them 151 s. This module
    reads the containers once and creates, starts, stops and removes them
    O(parallel) at a time with the Docker API.
  - Every container is the same specification; only its name differs, which
    is also its hostname and the value of O(name_variable) in its environment.
  - A digest of the specification (the image's ID included) is put on each
    container as the label C(io.lbcluster.spec). With O(state=started), a
    missing container is created and started, a stopped one is started (or
    recreated, if its digest differs), and a running one whose digest differs
    is left running and returned in RV(outdated): the caller replaces it when
    it chooses (the webapp role rolls them a batch at a time). So is one that
    is no longer on O(network) (a network removed and created again).
  - With O(state=absent), the containers are all stopped at once (each gets
    O(stop_timeout) seconds to exit by itself: the backends drain first, side
    by side), then removed O(parallel) at a time.
  - Supports check mode.
requirements:
  - docker (Python SDK) on the Docker host
options:
  names:
    description: Names of the containers.
    type: list
    elements: str
    required: true
  state:
    description: Whether the containers run (V(started)) or are gone (V(absent)).
    type: str
    choices: [started, absent]
    default: started
  image:
    description: Image of the containers; required with O(state=started).
    type: str
  env:
    description: Environment of every container.
    type: dict
    default: {}
  name_variable:
    description: Environment variable that receives each container's own name.
    type: str
  labels:
    description: Labels of every container (besides C(io.lbcluster.spec)).
    type: dict
    default: {}
  network:
    description: Network the containers join (their only one).
    type: str
  aliases:
    description: DNS aliases of the containers on O(network).
    type: list
    elements: str
    default: []
  mounts:
    description: Bind mounts, as C(source), C(target) and C(read_only).
    type: list
    elements: dict
    default: []
  restart_policy:
    description: Docker's restart policy.
    type: str
    choices: ["no", always, on-failure, unless-stopped]
    default: unless-stopped
  stop_timeout:
    description: Seconds a container has to exit after SIGTERM before it is killed.
    type: int
    default: 10
  parallel:
    description: >-
      Containers created, started or removed at a time (with O(state=absent),
      all are stopped at once first).
    type: int
    default: 8
  docker_host:
    description: Docker daemon URL; the environment (DOCKER_HOST) or the local socket by default.
    type: str
author:
  - lbcluster maintainers
"""

EXAMPLES = r"""
- name: Run s1 to s100
  lbcluster_backends:
    names: "{{ range(1, 101) | map('string') | map('regex_replace', '^', 's') | list }}"
    image: lbcluster-webapp:latest
    name_variable: TAG
    network: lbcluster
    aliases: [lbcluster-members]
  register: backends

- name: Remove s3 and s4 (each drains first)
  lbcluster_backends:
    names: [s3, s4]
    state: absent
    stop_timeout: 13
"""

RETURN = r"""
created:
  description: Containers created (and started) by this call.
  returned: always
  type: list
  elements: str
started:
  description: Stopped containers of the current specification that this call started.
  returned: always
  type: list
  elements: str
removed:
  description: Containers removed by this call (with O(state=absent), or stopped outdated ones).
  returned: always
  type: list
  elements: str
outdated:
  description: Running containers whose specification differs, left running.
  returned: always
  type: list
  elements: str
"""

import contextlib
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import docker
    from docker.errors import DockerException, ImageNotFound, NotFound
    from docker.types import Mount

    HAS_DOCKER = True
except ImportError:  # pragma: no cover - reported through fail_json
    HAS_DOCKER = False
    DockerException = ImageNotFound = NotFound = Exception

SPEC_LABEL = "io.lbcluster.spec"
# Part of the digest: a new way of creating the containers outdates them all.
SPEC_VERSION = 1


def spec_digest(spec, image_id):
    """A short digest of ``spec`` (the module's options that shape a container) and of
    the image's ID: equal digests, equal containers."""
    text = json.dumps([SPEC_VERSION, image_id, spec], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def container_spec(params):
    """The options that shape every container, normalised."""
    return {
        "env": {str(k): str(v) for k, v in params["env"].items()},
        "name_variable": params["name_variable"] or "",
        "labels": {str(k): str(v) for k, v in params["labels"].items()},
        "network": params["network"] or "",
        "aliases": list(params["aliases"]),
        "mounts": [
            {
                "source": str(m["source"]),
                "target": str(m["target"]),
                "read_only": bool(m.get("read_only", False)),
            }
            for m in params["mounts"]
        ],
        "restart_policy": params["restart_policy"],
        "stop_timeout": params["stop_timeout"],
    }


def plan(names, existing, digest):
    """What to do with each of ``names`` for state=started.

    ``existing``: name -> (running, digest label or None). Returns a dict of
    lists: ``create`` (missing), ``start`` (stopped, current), ``recreate``
    (stopped, outdated), ``outdated`` (running, outdated), ``ok``.
    """
    out = {"create": [], "start": [], "recreate": [], "outdated": [], "ok": []}
    for name in names:
        if name not in existing:
            out["create"].append(name)
            continue
        running, label = existing[name]
        current = label == digest
        if running:
            out["ok" if current else "outdated"].append(name)
        else:
            out["start" if current else "recreate"].append(name)
    return out


def check_names(names):
    """Container names Docker accepts, each once; else a message naming the bad ones."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    bad = [n for n in names if not n or not n[0].isalnum() or set(n) - allowed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if bad:
        problems.append(f"invalid container names: {', '.join(map(repr, bad))}")
    if dupes:
        problems.append(f"names given twice: {', '.join(dupes)}")
    return "; ".join(problems)


class Backends:
    """The Docker side: one API client per worker thread (a client's connection pool is
    not meant to be shared by many threads at once)."""

    def __init__(self, docker_host):
        self.docker_host = docker_host
        self.local = threading.local()

    def client(self):
        api = getattr(self.local, "api", None)
        if api is None:
            if self.docker_host:
                api = docker.APIClient(base_url=self.docker_host)
            else:
                api = docker.from_env().api
            self.local.api = api
        return api

    def existing(self, names, network):
        """name -> (running, spec label) for the containers among ``names`` that exist; the
        label of one that is not on ``network`` (a network recreated under it) is None."""
        wanted = set(names)
        found = {}
        for c in self.client().containers(all=True):
            for full in c.get("Names") or []:
                name = full.lstrip("/")
                if name in wanted:
                    label = (c.get("Labels") or {}).get(SPEC_LABEL)
                    networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
                    if network and network not in networks:
                        label = None
                    found[name] = (c.get("State") == "running", label)
        return found

    def image_id(self, image):
        return self.client().inspect_image(image)["Id"]

    def create(self, name, params, spec, digest):
        api = self.client()
        env = dict(spec["env"])
        if spec["name_variable"]:
            env[spec["name_variable"]] = name
        networking = None
        if spec["network"]:
            networking = api.create_networking_config(
                {spec["network"]: api.create_endpoint_config(aliases=spec["aliases"] or None)}
            )
        host_config = api.create_host_config(
            mounts=[
                Mount(m["target"], m["source"], type="bind", read_only=m["read_only"])
                for m in spec["mounts"]
            ],
            restart_policy={"Name": spec["restart_policy"]}
            if spec["restart_policy"] != "no"
            else None,
            network_mode=spec["network"] or None,
        )
        created = api.create_container(
            params["image"],
            name=name,
            hostname=name,
            environment=[f"{k}={v}" for k, v in sorted(env.items())],
            labels={**spec["labels"], SPEC_LABEL: digest},
            host_config=host_config,
            networking_config=networking,
            stop_timeout=spec["stop_timeout"],
        )
        api.start(created["Id"])

    def start(self, name):
        self.client().start(name)

    def stop(self, name, stop_timeout):
        with contextlib.suppress(NotFound):
            self.client().stop(name, timeout=stop_timeout)

    def delete(self, name):
        """Remove a stopped container and its anonymous volumes."""
        with contextlib.suppress(NotFound):
            self.client().remove_container(name, v=True)

    def remove(self, name, stop_timeout):
        self.stop(name, stop_timeout)
        self.delete(name)


def run_all(jobs, parallel):
    """Run ``(name, callable)`` jobs ``parallel`` at a time; name -> error message of those
    that failed (all are tried)."""
    errors = {}

    def one(job):
        name, work = job
        try:
            work()
        except DockerException as exc:
            errors[name] = str(exc)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, jobs))
    return errors


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "absent"], "default": "started"},
            "image": {"type": "str"},
            "env": {"type": "dict", "default": {}},
            "name_variable": {"type": "str"},
            "labels": {"type": "dict", "default": {}},
            "network": {"type": "str"},
            "aliases": {"type": "list", "elements": "str", "default": []},
            "mounts": {"type": "list", "elements": "dict", "default": []},
            "restart_policy": {
                "type": "str",
                "choices": ["no", "always", "on-failure", "unless-stopped"],
                "default": "unless-stopped",
            },
            "stop_timeout": {"type": "int", "default": 10},
            "parallel": {"type": "int", "default": 8},
            "docker_host": {"type": "str"},
        },
        required_if=[("state", "started", ["image"])],
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"))
    params = module.params
    names = params["names"]
    problem = check_names(names)
    for mount in params["mounts"]:
        if not mount.get("source") or not mount.get("target"):
            problem = f"a mount needs a source and a target: {mount!r}"
    if problem:
        module.fail_json(msg=f"lbcluster_backends: {problem}")
    result = {"changed": False, "created": [], "started": [], "removed": [], "outdated": []}
    backends = Backends(params["docker_host"])
    try:
        existing = backends.existing(names, params["network"])
        if params["state"] == "absent":
            gone = [n for n in names if n in existing]
            result["removed"] = gone
            result["changed"] = bool(gone)
            if gone and not module.check_mode:
                # All stop at once: a stopping backend only waits while HAProxy
                # drains it (98 at 20 a time took 5 drains in a row, 32 s).
                # Docker's own work, removing them, stays O(parallel) at a time.
                stops = [(n, lambda n=n: backends.stop(n, params["stop_timeout"])) for n in gone]
                errors = run_all(stops, len(stops))
                removals = [(n, lambda n=n: backends.delete(n)) for n in gone if n not in errors]
                errors.update(run_all(removals, params["parallel"]))
                if errors:
                    module.fail_json(msg=failure("remove", errors), **result)
            module.exit_json(**result)
        spec = container_spec(params)
        try:
            digest = spec_digest(spec, backends.image_id(params["image"]))
        except ImageNotFound:
            module.fail_json(msg=f"lbcluster_backends: image {params['image']} is not on the host")
        todo = plan(names, existing, digest)
    except DockerException as exc:
        module.fail_json(msg=f"lbcluster_backends: Docker: {exc}", **result)
    result["created"] = todo["create"] + todo["recreate"]
    result["started"] = todo["start"]
    result["removed"] = todo["recreate"]
    result["outdated"] = todo["outdated"]
    result["changed"] = bool(result["created"] or result["started"])
    if module.check_mode or not result["changed"]:
        module.exit_json(**result)

    def recreate(name):
        backends.remove(name, params["stop_timeout"])
        backends.create(name, params, spec, digest)

    jobs = (
        [(n, lambda n=n: backends.create(n, params, spec, digest)) for n in todo["create"]]
        + [(n, lambda n=n: recreate(n)) for n in todo["recreate"]]
        + [(n, lambda n=n: backends.start(n)) for n in todo["start"]]
    )
    errors = run_all(jobs, params["parallel"])
    if errors:
        module.fail_json(msg=failure("start", errors), **result)
    module.exit_json(**result)


def failure(action, errors):
    """One message naming every container that failed and why."""
    listed = "; ".join(f"{name}: {error}" for name, error in sorted(errors.items()))
    return f"lbcluster_backends: could not {action} {len(errors)} container(s): {listed}"


if __name__ == "__main__":
    main()
