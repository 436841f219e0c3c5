"""Cluster members: parsing and validation of what Serf reports.

Everything here is pure: text in, validated :class:`Member` values out.
A member that fails validation raises :class:`InvalidMember` naming the
field and the offending value, so the caller can refuse that member, log
why, and still apply the rest of the event.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The user event a backend sends once it has joined (see agent.send_join_hint).
HINT_EVENT = "lbcluster-hint"
ROLE_BALANCER = "balancer"
ROLE_BACKEND = "backend"
KNOWN_ROLES = frozenset({ROLE_BALANCER, ROLE_BACKEND})
STATUSES = frozenset({"alive", "leaving", "left", "failed", "none", "reap"})

# A member name becomes a file name under /nodes and a server name in
# haproxy.cfg: keep it to what is safe in both (a DNS label, plus '.' and '_').
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TAG_VALUE_RE = re.compile(r"^[A-Za-z0-9_.:/@+-]{0,128}$")
MAX_TAGS = 32


class InvalidMember(ValueError):
    """A member (or a line describing one) that must not reach any file."""


@dataclass(frozen=True, order=True)
class Member:
    """One validated cluster member."""

    name: str
    address: str
    role: str
    port: int | None = None
    status: str = "alive"
    tags: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def endpoint(self) -> str:
        """``address:port`` as HAProxy wants it (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def describe(self) -> str:
        """Human-readable one-liner used in logs: ``s1 172.18.0.3 role=backend port=3000``."""
        tags = " ".join(f"{k}={v}" for k, v in sorted(self.tags.items()))
        return f"{self.name} {self.address} {tags}".rstrip()


def _printable(value: str, limit: int = 60) -> str:
    """A bounded, escaped rendering of hostile input for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidMember(
            f"invalid member name {_printable(name)}: use 1-63 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def validate_address(address: str, *, member: str = "?") -> str:
    if "%" in address:  # a scope id is free text: never let it reach a file
        raise InvalidMember(
            f"member {member}: invalid address {_printable(address)}: scoped IPv6 not allowed"
        )
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidMember(
            f"member {member}: invalid address {_printable(address)}: not an IPv4 or IPv6 address"
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidMember(f"member {member}: address {ip.compressed} cannot receive traffic")
    return ip.compressed


def validate_port(value: str | int | None, *, member: str = "?") -> int:
    if value is None or value == "":
        raise InvalidMember(f"member {member}: backend has no 'port' tag")
    text = str(value)
    if len(text) > 5 or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidMember(f"member {member}: invalid port {_printable(text)}: expected 1-65535")
    return int(text)


def validate_tags(tags: Mapping[str, str], *, member: str = "?") -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidMember(f"member {member}: {len(tags)} tags, at most {MAX_TAGS} allowed")
    for key, value in tags.items():
        if not TAG_KEY_RE.fullmatch(key):
            raise InvalidMember(f"member {member}: invalid tag name {_printable(key)}")
        if not TAG_VALUE_RE.fullmatch(value):
            raise InvalidMember(f"member {member}: invalid value {_printable(value)} of tag {key}")
    return dict(tags)


def make_member(name: str, address: str, tags: Mapping[str, str], status: str = "alive") -> Member:
    """Validate raw fields and build a :class:`Member`.

    The role comes from the ``role`` tag and must be known; a backend must
    carry the port its application listens on in the ``port`` tag.
    """
    name = validate_name(name)
    address = validate_address(address, member=name)
    tags = validate_tags(tags, member=name)
    role = tags.get("role", "")
    if role not in KNOWN_ROLES:
        raise InvalidMember(
            f"member {name}: unknown role {_printable(role)}: expected one of "
            + ", ".join(sorted(KNOWN_ROLES))
        )
    if status not in STATUSES:
        raise InvalidMember(f"member {name}: unknown status {_printable(status)}")
    port = validate_port(tags.get("port"), member=name) if role == ROLE_BACKEND else None
    return Member(name=name, address=address, role=role, port=port, status=status, tags=tags)


def parse_tags(text: str) -> dict[str, str]:
    """Parse Serf's ``k=v,k=v`` tag list (as given to event handlers)."""
    tags: dict[str, str] = {}
    if not text:
        return tags
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidMember(f"malformed tag {_printable(item)}: expected key=value")
        if key in tags:
            raise InvalidMember(f"duplicate tag {_printable(key)}")
        tags[key] = value
    return tags


def parse_event_line(line: str) -> Member:
    """Parse one line of a Serf member event's stdin.

    Serf writes ``NAME<TAB>ADDRESS<TAB>ROLE<TAB>TAGS``; the role column is the
    deprecated ``-role`` flag and is usually empty: the ``role`` tag wins.
    """
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 4:
        raise InvalidMember(
            f"malformed member line {_printable(line)}: expected 4 tab-separated fields,"
            f" got {len(fields)}"
        )
    name, address, role, tag_text = fields
    tags = parse_tags(tag_text)
    if role and "role" not in tags:
        tags["role"] = role
    return make_member(name, address, tags)


def split_serf_addr(addr: str) -> str:
    """``"172.18.0.3:7946"`` or ``"[fd00::3]:7946"`` -> the IP part."""
    if addr.startswith("["):
        host, sep, _ = addr[1:].partition("]")
        if not sep:
            raise InvalidMember(f"malformed address {_printable(addr)}")
        return host
    host, _, _ = addr.rpartition(":")
    return host or addr


@dataclass
class ParseResult:
    """Members that passed validation, and the reasons for those that did not."""

    members: list[Member] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def parse_members_json(text: str) -> ParseResult:
    """Parse ``serf members -format=json`` output, refusing invalid members one by one."""
    try:
        data = json.loads(text)
        raw = data["members"]
        if not isinstance(raw, list):
            raise TypeError("'members' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidMember(f"unreadable 'serf members' output: {exc}") from None
    result = ParseResult()
    for item in raw:
        try:
            if not isinstance(item, dict):
                raise InvalidMember(f"member entry is not an object: {_printable(str(item))}")
            tags = item.get("tags") or {}
            if not isinstance(tags, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
            ):
                raise InvalidMember(f"member {item.get('name')!r}: tags are not strings")
            result.members.append(
                make_member(
                    str(item.get("name", "")),
                    split_serf_addr(str(item.get("addr", ""))),
                    tags,
                    str(item.get("status", "")),
                )
            )
        except InvalidMember as exc:
            result.refused.append(str(exc))
    return result


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


def alive_backends(
    members: Iterable[Member], joined: Mapping[str, int] | None = None
) -> ParseResult:
    """The backends that should receive traffic, sorted by name.

    Two backends claiming the same name, or the same address and port, would
    make HAProxy count one server twice: one is kept, the other refused. For
    a shared endpoint the latest to join wins (``joined``: a rank per name,
    higher is later), because Docker gives the address of a dead container
    to a new one while Serf still calls the dead one alive; without ranks,
    or on a tie, the first by name wins. For a shared name, the first wins.
    """
    result = ParseResult()
    names: set[str] = set()
    claims: dict[str, list[Member]] = {}
    for member in sorted(members):
        if member.role != ROLE_BACKEND or member.status != "alive":
            continue
        if member.name in names:
            result.refused.append(f"member {member.name}: name listed twice")
            continue
        names.add(member.name)
        claims.setdefault(member.endpoint, []).append(member)
    rank = joined or {}
    for endpoint, claimants in claims.items():
        winner = claimants[0]  # claimants are in name order: on a tie, the first stays
        for member in claimants[1:]:
            if rank.get(member.name, 0) > rank.get(winner.name, 0):
                winner = member
        result.members.append(winner)
        for member in claimants:
            if member is not winner:
                result.refused.append(
                    f"member {member.name}: endpoint {endpoint} already used by {winner.name}"
                    + (
                        " (which joined later)"
                        if rank.get(winner.name, 0) > rank.get(member.name, 0)
                        else ""
                    )
                )
    result.members.sort()
    return result


def member_from_rpc(name: object, addr: bytes, tags: object, status: object) -> Member:
    """Validate a member as Serf's RPC gives it (``Addr``: 4 or 16 bytes of IP)."""
    label = name if isinstance(name, str) else "?"
    if not isinstance(name, str):
        raise InvalidMember(f"member name is not a string: {_printable(str(name))}")
    if len(addr) not in (4, 16):
        raise InvalidMember(f"member {_printable(label)}: address of {len(addr)} bytes")
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise InvalidMember(f"member {_printable(label)}: tags are not strings")
    return make_member(name, ip.compressed, tags, str(status))
