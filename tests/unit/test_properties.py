"""Property tests: whatever Serf reports, only validated backends reach haproxy.cfg.

The real template and a full settings dict are used; `haproxy -c` is not run
(no HAProxy on the test host), the structure of the output is checked instead.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from helpers import SETTINGS, TEMPLATE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbcluster.events import parse_event_lines
from lbcluster.members import (
    NAME_RE,
    STATUSES,
    AddressPolicy,
    Member,
    alive_backends,
    parse_networks,
)
from lbcluster.render import render_config
from lbcluster.serfrpc import decode_members

SERVER_LINE = re.compile(r"^    server (\S+) (\S+)$")

HOSTILE = [
    "",
    " ",
    "s1 ",
    " s1",
    "s1\n",
    "s1\nserver evil 6.6.6.6:80",
    "evil\n    server x 1.1.1.1:1",
    "#",
    "s1#x",
    "'s1'",
    '"s1"',
    "{{ settings }}",
    "{% for x in y %}",
    "s\u200b1",
    "sérveur",
    "٣",
    "\x00",
    "a" * 64,
    "a" * 500,
    "-s1",
    "s1;s2",
    "s1,port=1",
    "role=backend",
]

names = st.one_of(
    st.sampled_from(["s1", "s2", "S3", "web-01.eu_west"]),  # small pool: duplicates
    st.from_regex(NAME_RE, fullmatch=True),
    st.sampled_from(HOSTILE),
    st.text(max_size=70),
)

# Serf's RPC gives an address as bytes: 4 or 16 (IPv4-mapped for IPv4) are
# addresses, anything else must be refused.
serf_addrs = st.one_of(
    st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1", "fd00:0::1"]).map(
        lambda a: ipaddress.ip_address(a).packed
    ),
    st.ip_addresses(v=4).map(lambda ip: ipaddress.IPv6Address(f"::ffff:{ip}").packed),
    st.ip_addresses().map(lambda ip: ip.packed),
    st.sampled_from(["0.0.0.0", "::", "224.0.0.1", "ff02::1"]).map(
        lambda a: ipaddress.ip_address(a).packed
    ),
    st.binary(max_size=20),
    st.sampled_from(HOSTILE),
)

ports = st.one_of(
    st.sampled_from(["3000", "3000", "80", "0", "65535", "65536", "abc", "٣", "", " 80"]),
    st.integers(-10, 70_000).map(str),
    st.text(max_size=8),
    st.none(),
)

roles = st.one_of(st.sampled_from(["backend", "backend", "balancer", "", "Backend"]), st.text())
statuses = st.one_of(st.sampled_from(sorted(STATUSES | {"", "zombie"})), st.text(max_size=8))


@st.composite
def serf_items(draw: st.DrawFn) -> Any:
    tags: Any = {"role": draw(roles)}
    port = draw(ports)
    if port is not None:
        tags["port"] = port
    if draw(st.integers(0, 20)) == 0:
        tags = draw(st.sampled_from([None, [], "role=backend", {"role": 1}]))
    name: Any = (
        draw(st.one_of(names, st.integers())) if draw(st.integers(0, 20)) == 0 else draw(names)
    )
    return {"Name": name, "Addr": draw(serf_addrs), "Tags": tags, "Status": draw(statuses)}


def baseline_lines() -> list[str]:
    return render_config(TEMPLATE, SETTINGS, []).splitlines()


BASELINE = baseline_lines()
BASELINE_TEXT = "\n".join(BASELINE)


def check_config(accepted: list[Member], input_names: list[str]) -> None:
    config = render_config(TEMPLATE, SETTINGS, accepted)
    lines = config.splitlines()
    assert config.endswith("\n")

    # The server lines are exactly the accepted backends, sorted by name.
    server_lines = [line for line in lines if line.lstrip().startswith("server")]
    assert server_lines == [f"    server {m.name} {m.endpoint}" for m in sorted(accepted)]
    for line in server_lines:
        match = SERVER_LINE.fullmatch(line)
        assert match, line
        name, endpoint = match.groups()
        assert NAME_RE.fullmatch(name)
        host, _, port = endpoint.rpartition(":")
        ipaddress.ip_address(host.strip("[]"))
        assert 1 <= int(port) <= 65535

    # Nothing else was added or changed: the config minus its server lines is
    # the zero-server config, line for line.
    assert [line for line in lines if line not in server_lines] == BASELINE

    # No refused name shows up (unless the text was there anyway).
    accepted_names = {m.name for m in accepted}
    for name in set(input_names) - accepted_names:
        if not name or name in BASELINE_TEXT or any(name in line for line in server_lines):
            continue
        assert name not in config, name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(serf_items(), max_size=12))
def test_only_validated_backends_reach_the_config(items: list[dict[str, Any]]) -> None:
    parsed = decode_members(items)
    assert len(parsed.members) + len(parsed.refused) == len(items)
    backends = alive_backends(parsed.members)
    accepted = backends.members

    assert [m.name for m in accepted] == sorted({m.name for m in accepted})  # unique, sorted
    assert len({m.endpoint for m in accepted}) == len(accepted)
    assert all(m.role == "backend" and m.status == "alive" for m in accepted)
    alive = [m for m in parsed.members if m.role == "backend" and m.status == "alive"]
    assert len(accepted) + len(backends.refused) == len(alive)

    check_config(accepted, [str(item["Name"]) for item in items])


line_fields = st.one_of(st.text(max_size=20), st.sampled_from(HOSTILE))


@st.composite
def event_lines(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        name = draw(names)
        addr = draw(st.one_of(st.ip_addresses().map(str), line_fields))
        if "%" in addr:
            addr = "10.9.9.9"
        role = draw(st.sampled_from(["", "backend", "balancer", "x"]))
        port = draw(ports) or ""
        tags = draw(st.sampled_from(["role=backend,port={p}", "port={p}", "role=balancer", ""]))
        return "\t".join([name, addr, role, tags.format(p=port)])
    return draw(line_fields)


@settings(max_examples=100, deadline=None)
@given(st.lists(event_lines(), max_size=10))
def test_event_stdin_never_injects_config(lines: list[str]) -> None:
    stdin = "\n".join(lines)
    parsed = parse_event_lines(stdin.splitlines())
    accepted = alive_backends(parsed.members).members
    check_config(accepted, [line.split("\t", 1)[0] for line in stdin.splitlines()])


def test_scoped_ipv6_address_never_injects_config_lines() -> None:
    line = "s1\tfe80::1%x\n    server evil 6.6.6.6:80 #\t\trole=backend,port=3000"
    parsed = parse_event_lines([line])
    accepted = alive_backends(parsed.members).members
    check_config(accepted, ["s1"])
    assert "evil" not in render_config(TEMPLATE, SETTINGS, accepted)


OWN = frozenset({"172.18.0.2"})
NETWORKS = ("172.18.0.0/16", "10.1.0.0/24", "fd00::/8")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.ip_addresses(),
                st.sampled_from(
                    ["127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.9.9", "fe80::1", "172.18.0.2"]
                ).map(ipaddress.ip_address),
                st.ip_addresses(network="172.18.0.0/16"),
            ),
            st.integers(1, 65535),
        ),
        max_size=12,
    )
)
def test_only_addresses_the_cluster_owns_become_servers(
    addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]],
) -> None:
    policy = AddressPolicy(parse_networks(NETWORKS), OWN)
    members = [
        Member(f"s{i}", ip.compressed, "backend", port) for i, (ip, port) in enumerate(addresses)
    ]
    result = alive_backends(members, None, policy)
    nets = parse_networks(NETWORKS)
    for member in result.members:
        ip = ipaddress.ip_address(member.address)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        assert mapped is None or not (mapped.is_loopback or mapped.is_link_local)
        assert not ip.is_loopback and not ip.is_link_local
        assert member.address not in OWN
        assert any(ip in net for net in nets)
    refused = {r.split(":")[0] for r in result.refused}
    for member in members:
        ip = ipaddress.ip_address(member.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_link_local or member.address in OWN:
            assert f"member {member.name}" in refused
