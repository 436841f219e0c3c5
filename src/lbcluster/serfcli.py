"""Reading the live membership from the local Serf agent."""

from __future__ import annotations

import subprocess

from .members import InvalidMember, ParseResult, parse_members_json


class SerfUnavailable(RuntimeError):
    """The local Serf agent did not answer."""


def live_members(serf_bin: str = "serf", rpc_addr: str = "127.0.0.1:7373") -> ParseResult:
    """All members the local agent knows (any status), validated one by one."""
    try:
        proc = subprocess.run(
            [serf_bin, "members", "-format=json", f"-rpc-addr={rpc_addr}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SerfUnavailable(f"serf members failed: {exc}") from None
    if proc.returncode != 0:
        raise SerfUnavailable(
            f"serf members exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    try:
        return parse_members_json(proc.stdout)
    except InvalidMember as exc:
        raise SerfUnavailable(str(exc)) from None
