"""The cluster's secrets inside a container: files, never the environment.

Ansible writes them on the Docker host into a directory owned by the Serf
agent's user (mode 0700, files 0400) and bind-mounts it read-only at
``/run/secrets/lbcluster`` (``Paths.secrets_dir``): ``docker inspect``, the
play's output and the other processes of the container do not see them.
Errors name the file and never show what it holds.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

GOSSIP_KEY_FILE = "serf-encrypt-key"
"""Serf's gossip key, as its ``encrypt_key`` takes it: base64 of 16, 24 or 32 bytes."""

RPC_TOKEN_FILE = "serf-rpc"  # noqa: S105 (a file name, not a password)
"""The token of the local agent's RPC (what the ``serf`` CLI reads from SERF_RPC_AUTH)."""

MAX_BYTES = 4096
"""A secret file is one short line; anything longer is not one."""


class SecretUnavailable(RuntimeError):
    """A secret file is missing, unreadable or malformed; the message names the file."""


def read_secret(path: Path, what: str) -> str:
    """The one line of printable ASCII (no spaces) in ``path``, surrounding whitespace removed."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SecretUnavailable(f"cannot read {what}: {path}: no such file") from None
    except PermissionError:
        raise SecretUnavailable(
            f"cannot read {what}: {path}: permission denied to uid {os.geteuid()}"
        ) from None
    except OSError as exc:
        raise SecretUnavailable(f"cannot read {what}: {path}: {exc.strerror or exc}") from None
    text = data.decode("ascii", errors="replace").strip()
    if len(data) > MAX_BYTES or not text or not all("!" <= c <= "~" for c in text):
        raise SecretUnavailable(
            f"{what} in {path} is malformed: expected one line of printable ASCII"
            f" without spaces, at most {MAX_BYTES} bytes"
            + (" (the file is empty)" if not text else "")
        )
    return text


def rpc_token(directory: Path) -> str:
    """The token of the local Serf agent's RPC: file ``serf-rpc`` of ``directory``."""
    return read_secret(directory / RPC_TOKEN_FILE, "the Serf RPC token")


def gossip_key(directory: Path) -> str:
    """Serf's gossip key (file ``serf-encrypt-key`` of ``directory``), checked as Serf would."""
    path = directory / GOSSIP_KEY_FILE
    key = read_secret(path, "the Serf gossip key")
    try:
        size = len(base64.b64decode(key, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise SecretUnavailable(
            f"the Serf gossip key in {path} is not base64 of a 16, 24 or 32-byte key: {exc}"
        ) from None
    if size not in (16, 24, 32):
        raise SecretUnavailable(
            f"the Serf gossip key in {path} is {size} bytes once decoded: expected 16, 24 or 32"
        )
    return key
