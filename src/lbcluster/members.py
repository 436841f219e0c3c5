"""Cluster members: parsing and validation of what Serf reports.

Everything here is pure: raw fields in, validated :class:`Member` values out
(Serf's RPC records are decoded in serfrpc.py, the lab's event-script lines
in events.py, the /nodes files in nodes.py: all of them end here).
A member that fails validation raises :class:`InvalidMember` naming the
field and the offending value, so the caller can refuse that member, log
why, and still apply the rest of the event.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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


def printable(value: str, limit: int = 60) -> str:
    """A bounded, escaped rendering of hostile input for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidMember(
            f"invalid member name {printable(name)}: use 1-63 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


def validate_address(address: str, *, member: str = "?") -> str:
    if "%" in address:  # a scope id is free text: never let it reach a file
        raise InvalidMember(
            f"member {member}: invalid address {printable(address)}: scoped IPv6 not allowed"
        )
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidMember(
            f"member {member}: invalid address {printable(address)}: not an IPv4 or IPv6 address"
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidMember(f"member {member}: address {ip.compressed} cannot receive traffic")
    return ip.compressed


def validate_port(value: str | int | None, *, member: str = "?") -> int:
    if value is None or value == "":
        raise InvalidMember(f"member {member}: backend has no 'port' tag")
    text = str(value)
    if len(text) > 5 or not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidMember(f"member {member}: invalid port {printable(text)}: expected 1-65535")
    return int(text)


def validate_tags(tags: Mapping[str, str], *, member: str = "?") -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidMember(f"member {member}: {len(tags)} tags, at most {MAX_TAGS} allowed")
    for key, value in tags.items():
        if not TAG_KEY_RE.fullmatch(key):
            raise InvalidMember(f"member {member}: invalid tag name {printable(key)}")
        if not TAG_VALUE_RE.fullmatch(value):
            raise InvalidMember(f"member {member}: invalid value {printable(value)} of tag {key}")
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
            f"member {name}: unknown role {printable(role)}: expected one of "
            + ", ".join(sorted(KNOWN_ROLES))
        )
    if status not in STATUSES:
        raise InvalidMember(f"member {name}: unknown status {printable(status)}")
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
            raise InvalidMember(f"malformed tag {printable(item)}: expected key=value")
        if key in tags:
            raise InvalidMember(f"duplicate tag {printable(key)}")
        tags[key] = value
    return tags


@dataclass
class ParseResult:
    """Members that passed validation, and the reasons for those that did not."""

    members: list[Member] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[object]) -> tuple[IPNetwork, ...]:
    """CIDRs such as ``172.18.0.0/16``; raises ValueError naming the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f"{printable(str(value))} is not a network (CIDR)") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses may become servers: only the cluster's own.

    A member holding the gossip key could otherwise advertise any address
    (loopback, the balancer itself, a host outside the cluster) and get a
    share of the users' requests sent there.
    """

    networks: tuple[IPNetwork, ...] = ()  # the cluster's networks; empty: any
    own: frozenset[str] = frozenset()  # the balancer's own addresses

    @classmethod
    def from_settings(cls, settings: Mapping[str, object], own: frozenset[str]) -> AddressPolicy:
        """The policy settings.json asks for (``backend_networks``); ValueError names a bad one."""
        networks = settings.get("backend_networks") or []
        return cls(parse_networks(networks if isinstance(networks, Iterable) else [networks]), own)

    def refusal(self, address: str) -> str | None:
        """Why ``address`` (already valid, see validate_address) may not be a server."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if ip.is_loopback:
            return "is a loopback address"
        if ip.is_link_local:
            return "is a link-local address"
        if ip.compressed in self.own:
            return "is the balancer's own address"
        if self.networks and not any(ip in net for net in self.networks):
            shown = ", ".join(str(n) for n in self.networks)
            return f"is outside the cluster's networks ({shown})"
        return None


def alive_backends(
    members: Iterable[Member],
    joined: Mapping[str, int] | None = None,
    policy: AddressPolicy | None = None,
) -> ParseResult:
    """The backends that should receive traffic, sorted by name.

    A backend whose address the ``policy`` refuses is refused with the reason.

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
        why = policy.refusal(member.address) if policy else None
        if why:
            result.refused.append(f"member {member.name}: address {member.address} {why}")
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


class JoinOrder:
    """Ranks alive members by when they were first seen together (for alive_backends).

    Docker gives the address of a dead container to a new one while Serf may
    still call the dead one alive: the later one wins the shared endpoint.
    """

    def __init__(self) -> None:
        self.ranks: dict[str, int] = {}
        self._joins = 0

    def update(self, alive: Iterable[str]) -> dict[str, int]:
        """Forget the departed, rank the newcomers (first seen together: a tie)."""
        names = set(alive)
        self.ranks = {n: r for n, r in self.ranks.items() if n in names}
        new = names - self.ranks.keys()
        if new:
            self._joins += 1
            self.ranks |= dict.fromkeys(new, self._joins)
        return self.ranks
