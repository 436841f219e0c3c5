"""HAProxy at the edges: validate a config, install it atomically, reload, read stats."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ConfigInvalid(RuntimeError):
    """``haproxy -c`` rejected a rendered configuration."""


class ReloadFailed(RuntimeError):
    """HAProxy did not confirm loading the new configuration."""


def check_config(path: Path, haproxy_bin: str = "haproxy") -> None:
    """Run ``haproxy -c -f path``; raise :class:`ConfigInvalid` with its diagnostics."""
    try:
        proc = subprocess.run(
            [haproxy_bin, "-c", "-q", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigInvalid(f"haproxy -c did not finish checking {path} within 30 s") from None
    if proc.returncode != 0:
        detail = " | ".join(
            line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()
        )
        raise ConfigInvalid(f"haproxy -c rejected {path}: {detail or 'no diagnostics'}")


def install_config(text: str, live: Path, haproxy_bin: str = "haproxy") -> str | None:
    """Validate ``text`` and atomically replace ``live`` with it.

    Returns the previous content ("" when there was none), so a failed reload
    can put it back, or None (touching nothing) when ``live`` already has
    this content. On a validation error the live file is left as it was.
    """
    try:
        previous = live.read_text(encoding="utf-8")
    except FileNotFoundError:
        previous = ""
    if previous == text:
        return None
    live.parent.mkdir(parents=True, exist_ok=True)
    candidate = live.with_name(f".{live.name}.new")
    candidate.write_text(text, encoding="utf-8")
    try:
        check_config(candidate, haproxy_bin)
        os.replace(candidate, live)
    finally:
        candidate.unlink(missing_ok=True)
    return previous


def differs_beyond_servers(old: str, new: str) -> bool:
    """Whether ``new`` changes more than ``old``'s server lines (what the Runtime API
    can change live): anything else takes a reload."""

    def rest(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.lstrip().startswith("server ")]

    return rest(old) != rest(new)


def restore_config(previous: str, live: Path) -> None:
    """Put back the configuration that is still running (after a failed reload)."""
    if not previous:
        return
    tmp = live.with_name(f".{live.name}.restore")
    tmp.write_text(previous, encoding="utf-8")
    os.replace(tmp, live)


def socket_command(path: Path, command: str, timeout: float = 5.0, *, wait: bool = True) -> str:
    """Send one command to an HAProxy CLI socket (admin or master) and return the answer.

    With ``wait=False`` the command is sent and the connection closed at once
    (the master answers nothing to ``reload``: it re-executes itself).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of input: the CLI answers, then closes
        if not wait:
            return ""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class ProcInfo:
    """What the master CLI's ``show proc`` says about the master and its current worker."""

    reloads: int
    failed: int
    workers: tuple[int, ...]


_MASTER_RE = re.compile(r"^(\d+)\s+master\s+(\d+)(?:\s+\[failed:\s*(\d+)\])?")
_WORKER_RE = re.compile(r"^(\d+)\s+worker\s+(\d+)")


def parse_show_proc(text: str) -> ProcInfo:
    reloads = failed = 0
    workers: list[int] = []
    section = "current"
    for line in text.splitlines():
        if line.startswith("# old workers"):
            section = "old"
        elif line.startswith("# programs"):
            section = "programs"
        if m := _MASTER_RE.match(line):
            reloads, failed = int(m.group(2)), int(m.group(3) or 0)
        elif (m := _WORKER_RE.match(line)) and section == "current":
            workers.append(int(m.group(1)))
    return ProcInfo(reloads=reloads, failed=failed, workers=tuple(workers))


def reload(master_socket: Path, timeout: float = 10.0) -> ProcInfo:
    """Seamless reload through the master CLI, confirmed by ``show proc``.

    HAProxy 2.6 answers ``reload`` at once without a status, so the master's
    reload counter is watched until a new worker is up (or the failure
    counter rises, in which case the previous worker keeps serving).
    """
    before = parse_show_proc(socket_command(master_socket, "show proc"))
    socket_command(master_socket, "reload", wait=False)
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            now = parse_show_proc(socket_command(master_socket, "show proc", timeout=1.0))
        except OSError as exc:  # the master re-executes itself: its socket blinks
            last_error = str(exc)
            continue
        if now.failed > before.failed:
            raise ReloadFailed("HAProxy refused the new configuration; the old worker still serves")
        if now.reloads > before.reloads and now.workers and now.workers != before.workers:
            return now
    raise ReloadFailed(f"HAProxy did not confirm the reload within {timeout:.0f}s ({last_error})")


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """Parse ``show stat`` CSV (header line starts with ``# ``)."""
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    return [dict(row) for row in csv.DictReader(io.StringIO(text)) if row.get("pxname")]


def server_rows(rows: list[dict[str, str]], backend: str) -> list[dict[str, str]]:
    """The rows of the servers of ``backend`` (not its FRONTEND or BACKEND summary rows)."""
    return [
        r for r in rows if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
    ]


def server_states(cli_socket: Path, backend: str, *, worker: str = "") -> list[dict[str, str]]:
    """The rows of ``show stat`` for the servers of ``backend``: from the admin socket,
    or through the master socket with ``worker`` (``@1``: the current worker)."""
    command = f"{worker} show stat".lstrip()
    return server_rows(parse_stat_csv(socket_command(cli_socket, command)), backend)


class RuntimeCommandFailed(RuntimeError):
    """The Runtime API refused a command."""


def default_server_options(config_text: str) -> list[str]:
    """The ``default-server`` options of a config: dynamic servers do not inherit them."""
    for line in config_text.splitlines():
        words = line.split()
        if words[:1] == ["default-server"]:
            return words[1:]
    return []


def runtime_add_server(
    admin_socket: Path, backend: str, name: str, endpoint: str, options: list[str]
) -> None:
    """Add a server without a reload: ``add server``, then enable its checks and traffic."""
    commands = [
        (f"add server {backend}/{name} {endpoint} {' '.join(options)}".rstrip(), "New server"),
        (f"enable health {backend}/{name}", ""),
        (f"enable server {backend}/{name}", ""),
    ]
    for command, expected in commands:
        answer = socket_command(admin_socket, command).strip()
        if (expected and expected not in answer) or (not expected and answer):
            raise RuntimeCommandFailed(f"{command!r}: {answer or 'no answer'}")


def _runtime(admin_socket: Path, command: str) -> str:
    answer = socket_command(admin_socket, command).strip()
    if answer:
        raise RuntimeCommandFailed(f"{command!r}: {answer}")
    return answer


def runtime_set_state(admin_socket: Path, backend: str, name: str, state: str) -> None:
    """``set server BACKEND/NAME state ready|drain|maint`` (maint: no new requests)."""
    _runtime(admin_socket, f"set server {backend}/{name} state {state}")


def runtime_del_server(admin_socket: Path, backend: str, name: str) -> bool:
    """Delete a server in maintenance; False while it still has connections (retry later)."""
    command = f"del server {backend}/{name}"
    answer = socket_command(admin_socket, command).strip()
    if "deleted" in answer.lower() or "no such" in answer.lower():
        return True
    if "connection" in answer.lower() or "queue" in answer.lower():
        return False
    raise RuntimeCommandFailed(f"{command!r}: {answer or 'no answer'}")


class NotServing(RuntimeError):
    """HAProxy did not start serving in time."""


def serving(master_socket: Path, backend: str, expect_servers: bool) -> str | None:
    """None once this container's HAProxy serves; otherwise what it still lacks.

    Asked through the master socket (the container's own), never the shared
    admin socket: a worker is running, so it holds the listeners, and when
    servers are expected (``/nodes`` names some), at least one is UP.
    """
    try:
        proc = parse_show_proc(socket_command(master_socket, "show proc", timeout=1.0))
        if not proc.workers:
            return "HAProxy has no worker yet"
        if not expect_servers:
            return None
        rows = server_states(master_socket, backend, worker="@1")
    except OSError as exc:
        return f"HAProxy's master socket {master_socket} does not answer ({exc})"
    if any(r.get("status", "").startswith("UP") for r in rows):
        return None
    return f"no server of {backend} is UP yet ({len(rows)} configured)"


def wait_serving(master_socket: Path, backend: str, expect_servers: bool, timeout: float) -> float:
    """Wait until :func:`serving`; returns the seconds waited, raises NotServing."""
    started = time.monotonic()
    while (lacking := serving(master_socket, backend, expect_servers)) is not None:
        if time.monotonic() - started >= timeout:
            raise NotServing(f"not serving after {timeout:.0f} s: {lacking}")
        time.sleep(0.2)
    return time.monotonic() - started
