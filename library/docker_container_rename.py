#!/usr/bin/python
"""Ansible module: rename a Docker container (community.docker has no such module)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_container_rename
short_description: Rename a Docker container, keeping it running
description:
  - Renames the container O(name) to O(new_name) through the Docker API
    (C(docker rename)); the container keeps running.
  - Idempotent; changes nothing when O(name) is absent and O(new_name) exists (it was
    renamed already). Fails when both exist or neither does.
  - The balancer role renames the running balancer before its replacement
    starts under the same name, and back if the replacement fails.
requirements:
  - docker (Python SDK) on the Docker host
options:
  name:
    description: The container's current name.
    type: str
    required: true
  new_name:
    description: The name it gets.
    type: str
    required: true
  docker_host:
    description: Docker daemon URL; the environment (DOCKER_HOST) or the local socket by default.
    type: str
author:
  - lbcluster maintainers
"""

EXAMPLES = r"""
- name: Set the running balancer aside
  docker_container_rename:
    name: ha
    new_name: ha-old
"""

RETURN = r"""
id:
  description: The container's ID.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import docker
    from docker.errors import DockerException, NotFound

    HAS_DOCKER = True
except ImportError:  # pragma: no cover - reported through fail_json
    HAS_DOCKER = False
    DockerException = NotFound = Exception


def find(client, name):
    try:
        return client.containers.get(name)
    except NotFound:
        return None


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "new_name": {"type": "str", "required": True},
            "docker_host": {"type": "str"},
        },
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"))
    name, new_name = module.params["name"], module.params["new_name"]
    try:
        client = (
            docker.DockerClient(base_url=module.params["docker_host"])
            if module.params["docker_host"]
            else docker.from_env()
        )
        current, target = find(client, name), find(client, new_name)
        if current is None and target is not None:
            module.exit_json(changed=False, id=target.id)
        if current is None:
            module.fail_json(msg=f"cannot rename {name} to {new_name}: no container {name}")
        if target is not None:
            module.fail_json(
                msg=f"cannot rename {name} to {new_name}: a container {new_name} exists already"
            )
        if not module.check_mode:
            current.rename(new_name)
    except DockerException as exc:
        module.fail_json(msg=f"cannot rename {name} to {new_name}: {exc}")
    module.exit_json(changed=True, id=current.id)


if __name__ == "__main__":
    main()
