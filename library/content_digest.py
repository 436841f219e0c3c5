#!/usr/bin/python
"""Ansible module: a stable SHA-256 digest of files and directory trees."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: content_digest
short_description: Digest of the content of files and directories
description:
  - Computes one SHA-256 digest over the relative paths, modes and contents of
    the given files and directory trees, skipping Python caches.
  - Used to tag container images by the hash of their build inputs, so an
    unchanged input rebuilds nothing and a changed one rebuilds what uses it.
  - With O(sets), several digests in one module run (one per image: each
    module run costs 0.3 to 0.6 s of every play).
  - Never changes anything.
options:
  paths:
    description: Files or directories, relative to O(root) or absolute.
    type: list
    elements: path
  sets:
    description:
      - Instead of O(paths), named lists of paths, each digested on its own (with
        the same O(salt)); the results are in RV(sets).
    type: dict
  root:
    description: Directory the relative paths are taken from.
    type: path
    required: true
  salt:
    description: Extra text mixed into the digest (for example the tag of a parent image).
    type: str
    default: ""
  length:
    description: Number of hex digits returned in RV(short).
    type: int
    default: 12
author:
  - lbcluster maintainers
"""

EXAMPLES = r"""
- name: Digest the inputs of the ha image
  content_digest:
    root: /var/cache/lbcluster/build/context
    paths: [Dockerfile, pkg, common, ha]
    salt: "lbcluster-base:0123456789ab"
  register: ha_digest

- name: Digest the inputs of both images in one run
  content_digest:
    root: /var/cache/lbcluster/build/context
    sets:
      ha: [Dockerfile, pkg, common, ha]
      webapp: [Dockerfile, pkg, common, webapp]
  register: digests  # digests.sets.ha.short, digests.sets.webapp.short
"""

RETURN = r"""
digest:
  description: Full hex SHA-256 digest.
  returned: with O(paths)
  type: str
short:
  description: The first O(length) hex digits of RV(digest).
  returned: with O(paths)
  type: str
files:
  description: Number of files hashed.
  returned: with O(paths)
  type: int
sets:
  description: For each name of O(sets), its C(digest), C(short) and C(files).
  returned: with O(sets)
  type: dict
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule

SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


def iter_files(root, paths):
    """Yield (relative path, absolute path) of every file, sorted."""
    found = []
    for item in paths:
        full = item if os.path.isabs(item) else os.path.join(root, item)
        if not os.path.exists(full):
            raise FileNotFoundError(f"{full}: no such file or directory")
        if os.path.isfile(full):
            found.append((os.path.relpath(full, root), full))
            continue
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in filenames:
                if not name.endswith(SKIP_SUFFIXES):
                    path = os.path.join(dirpath, name)
                    found.append((os.path.relpath(path, root), path))
    return sorted(found)


def digest(root, paths, salt=""):
    """Return (hex digest, number of files)."""
    sha = hashlib.sha256()
    sha.update(salt.encode() + b"\0")
    count = 0
    for rel, full in iter_files(root, paths):
        executable = os.stat(full).st_mode & 0o111
        sha.update(f"{rel}\0{'x' if executable else '-'}\0".encode())
        with open(full, "rb") as fh:
            sha.update(hashlib.sha256(fh.read()).digest())
        count += 1
    return sha.hexdigest(), count


def main():
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path"},
            "sets": {"type": "dict"},
            "root": {"type": "path", "required": True},
            "salt": {"type": "str", "default": ""},
            "length": {"type": "int", "default": 12},
        },
        required_one_of=[("paths", "sets")],
        mutually_exclusive=[("paths", "sets")],
        supports_check_mode=True,
    )
    params = module.params
    if not 4 <= params["length"] <= 64:
        module.fail_json(msg=f"length must be between 4 and 64, got {params['length']}")
    sets = params["sets"] if params["sets"] is not None else {"": params["paths"]}
    results = {}
    for name, paths in sets.items():
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            module.fail_json(msg=f"sets: {name}: expected a list of paths, got {paths!r}")
        try:
            value, count = digest(params["root"], paths, params["salt"])
        except OSError as exc:
            module.fail_json(msg=f"cannot digest {paths} under {params['root']}: {exc}")
        results[name] = {"digest": value, "short": value[: params["length"]], "files": count}
    if params["sets"] is None:
        module.exit_json(changed=False, **results[""])
    module.exit_json(changed=False, sets=results)


if __name__ == "__main__":
    main()
