"""Serf events as the handler sees them, from the RPC stream or, in the lab's
way, as an event-handler script (``SERF_EVENT`` and member lines on stdin).

Both ways in end in one :class:`Event`; the RPC records are decoded in
serfrpc.py, the script's lines here (a thin adapter onto the same members).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .members import InvalidMember, Member, ParseResult, make_member, parse_tags, printable

MEMBER_EVENTS = frozenset(
    {"member-join", "member-leave", "member-failed", "member-update", "member-reap"}
)
OTHER_EVENTS = frozenset({"user", "query"})
# Not a Serf event: the local agent logged that a member joined (the RPC's
# log stream, see serfrpc.is_join_log), a second or more before Serf's
# coalescing lets the member-join event through. A hint to read the live
# membership now; it names no member and is not trusted.
JOIN_SEEN = "join-seen"
MAX_STDIN = 4 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    """One Serf event: its name, the user event's name, the members it names."""

    name: str
    user_event: str = ""
    members: ParseResult = field(default_factory=ParseResult)

    @property
    def is_hint(self) -> bool:
        return self.name == JOIN_SEEN


def parse_event_line(line: str) -> Member:
    """Parse one line of a Serf member event's stdin.

    Serf writes ``NAME<TAB>ADDRESS<TAB>ROLE<TAB>TAGS``; the role column is the
    deprecated ``-role`` flag and is usually empty: the ``role`` tag wins.
    """
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 4:
        raise InvalidMember(
            f"malformed member line {printable(line)}: expected 4 tab-separated fields,"
            f" got {len(fields)}"
        )
    name, address, role, tag_text = fields
    tags = parse_tags(tag_text)
    if role and "role" not in tags:
        tags["role"] = role
    return make_member(name, address, tags)


def parse_event_lines(lines: Iterable[str]) -> ParseResult:
    """Parse a member event's stdin, refusing invalid lines one by one."""
    result = ParseResult()
    for line in lines:
        if not line.strip():
            continue
        try:
            result.members.append(parse_event_line(line))
        except InvalidMember as exc:
            result.refused.append(str(exc))
    return result


class InvalidEvent(ValueError):
    """Something that is not a Serf event (a wrong name, an oversized input)."""


def script_event(name: str, user_event: str, stdin: str) -> Event:
    """The event a Serf event-handler script receives (``SERF_EVENT``, stdin)."""
    if name not in MEMBER_EVENTS | OTHER_EVENTS:
        raise InvalidEvent(f"SERF_EVENT is {repr(name[:40]) if name else 'nothing'}")
    if len(stdin) > MAX_STDIN:
        raise InvalidEvent(f"event input larger than {MAX_STDIN} bytes: refused")
    members = parse_event_lines(stdin.splitlines()) if name in MEMBER_EVENTS else ParseResult()
    return Event(name, user_event if name == "user" else "", members)
