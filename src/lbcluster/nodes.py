"""The /nodes directory: one file per alive backend, derived from the live membership."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .members import InvalidMember, Member, make_member, parse_tags


def node_line(member: Member) -> str:
    """``s1 172.18.0.3 3000 port=3000,role=backend`` (name, address, port, tags)."""
    tags = ",".join(f"{k}={v}" for k, v in sorted(member.tags.items()))
    return f"{member.name} {member.address} {member.port} {tags}\n"


def parse_node_line(text: str) -> Member:
    parts = text.strip().split(" ")
    if len(parts) != 4:
        raise InvalidMember(f"malformed node file line {text.strip()[:60]!r}")
    name, address, _port, tags = parts
    return make_member(name, address, parse_tags(tags))


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sync_nodes(directory: Path, backends: Iterable[Member]) -> SyncResult:
    """Make ``directory`` hold exactly one file per backend, touching only what differs."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {m.name: node_line(m) for m in backends}
    result = SyncResult()
    for entry in directory.iterdir():
        if entry.name.startswith("."):
            if entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
            continue
        if entry.name not in wanted and entry.is_file():
            entry.unlink()
            result.removed.append(entry.name)
    for name, text in sorted(wanted.items()):
        path = directory / name
        try:
            current: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        _write_atomically(path, text)
        (result.added if current is None else result.updated).append(name)
    return result


def read_nodes(directory: Path) -> tuple[list[Member], list[str]]:
    """Members recorded under ``directory`` and the reasons for unreadable files."""
    members: list[Member] = []
    problems: list[str] = []
    if not directory.is_dir():
        return members, problems
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        try:
            member = parse_node_line(entry.read_text(encoding="utf-8"))
            if member.name != entry.name:
                raise InvalidMember(f"file {entry.name} describes member {member.name}")
            members.append(member)
        except (InvalidMember, OSError, UnicodeDecodeError) as exc:
            problems.append(f"{entry}: {exc}")
    return members, problems
