#!/usr/bin/python
"""Ansible module: a private directory of secret files, in one call, never showing them."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lbcluster_secret_files
short_description: Write secret files into a private directory, in one call
description:
  - Makes O(path) a directory of O(owner) and O(group) with mode 0700, and
    writes each entry of O(files) into it as a file of O(owner), O(group) and
    O(mode). A file is rewritten (atomically) only when its content, owner or
    mode differ; files of the directory not named in O(files) are left alone.
  - The contents are never logged, returned or part of an error message (the
    option is C(no_log)), so the task needs no C(no_log) of its own and its
    errors stay readable.
  - One module run instead of a C(file) and a C(copy) task per secret: a
    C(copy) costs two module runs even when nothing changes.
  - Supports check mode.
options:
  path:
    description: The directory.
    type: path
    required: true
  files:
    description: File name (no C(/)) -> exact content.
    type: dict
    required: true
  owner:
    description: Numeric uid of the directory and the files.
    type: int
    required: true
  group:
    description: Numeric gid of the directory and the files.
    type: int
    required: true
  mode:
    description: Mode of the files, as an octal string.
    type: str
    default: "0400"
author:
  - lbcluster maintainers
"""

EXAMPLES = r"""
- name: Hand the Serf key and token to the containers
  lbcluster_secret_files:
    path: /var/lib/lbcluster/secrets/webapp
    owner: 7946
    group: 7946
    files:
      serf-encrypt-key: "{{ key }}\n"
      serf-rpc: "{{ token }}\n"
"""

RETURN = r"""
written:
  description: Names of the files written (new or changed content, owner or mode).
  returned: always
  type: list
  elements: str
"""

import contextlib
import os
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

DIR_MODE = 0o700


class SecretFilesError(Exception):
    """What could not be done, naming the path (never a content)."""


def _fits(st, owner, group, mode):
    return st.st_uid == owner and st.st_gid == group and stat.S_IMODE(st.st_mode) == mode


def ensure_directory(path, owner, group, check_mode=False):
    """Make ``path`` a 0700 directory of owner:group; whether anything changed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not check_mode:
            try:
                os.makedirs(path, mode=DIR_MODE)
                os.chown(path, owner, group)
                os.chmod(path, DIR_MODE)
            except OSError as exc:
                raise SecretFilesError(f"cannot create {path}: {exc.strerror}") from None
        return True
    except OSError as exc:
        raise SecretFilesError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SecretFilesError(f"{path} exists and is not a directory")
    if _fits(st, owner, group, DIR_MODE):
        return False
    if not check_mode:
        try:
            os.chown(path, owner, group)
            os.chmod(path, DIR_MODE)
        except OSError as exc:
            problem = f"cannot set the owner or mode of {path}: {exc.strerror}"
            raise SecretFilesError(problem) from None
    return True


def needs_writing(target, content, owner, group, mode):
    """Whether ``target`` differs from ``content`` (bytes), owner, group or mode."""
    try:
        st = os.lstat(target)
        if not stat.S_ISREG(st.st_mode) or not _fits(st, owner, group, mode):
            return True
        with open(target, "rb") as fh:
            return fh.read() != content
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise SecretFilesError(f"cannot read {target}: {exc.strerror}") from None


def write_atomically(target, content, owner, group, mode):
    """Write ``content`` to ``target`` through a private temporary file and a rename."""
    directory = os.path.dirname(target)
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    except OSError as exc:
        raise SecretFilesError(f"cannot write into {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchown(fh.fileno(), owner, group)
            os.fchmod(fh.fileno(), mode)
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise SecretFilesError(f"cannot write {target}: {exc.strerror}") from None


def check_names(files):
    """The names that cannot be file names of the directory."""
    return sorted(n for n in files if not n or "/" in n or n in (".", ".."))


def apply(path, files, perms, *, check_mode):
    """Make the directory and the files so, ``perms`` being (owner, group, mode of the
    files); (whether the directory changed, names of the files written)."""
    owner, group, mode = perms
    changed_dir = ensure_directory(path, owner, group, check_mode)
    written = []
    for name in sorted(files):
        target = os.path.join(path, name)
        content = str(files[name]).encode()
        if needs_writing(target, content, owner, group, mode):
            if not check_mode:
                write_atomically(target, content, owner, group, mode)
            written.append(name)
    return changed_dir, written


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "files": {"type": "dict", "required": True, "no_log": True},
            "owner": {"type": "int", "required": True},
            "group": {"type": "int", "required": True},
            "mode": {"type": "str", "default": "0400"},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        mode = int(params["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"lbcluster_secret_files: mode {params['mode']!r} is not octal")
    bad = check_names(params["files"])
    if bad:
        listed = ", ".join(map(repr, bad))
        module.fail_json(msg=f"lbcluster_secret_files: not a file name: {listed}")
    try:
        changed_dir, written = apply(
            params["path"],
            params["files"],
            (params["owner"], params["group"], mode),
            check_mode=module.check_mode,
        )
    except SecretFilesError as exc:
        module.fail_json(msg=f"lbcluster_secret_files: {exc}")
    module.exit_json(changed=changed_dir or bool(written), written=written)


if __name__ == "__main__":
    main()
