"""lbcluster.members: parsing and validation of what Serf reports."""

from __future__ import annotations

import re

import pytest

from lbcluster.events import parse_event_line
from lbcluster.members import (
    MAX_TAGS,
    NAME_RE,
    AddressPolicy,
    InvalidMember,
    JoinOrder,
    Member,
    alive_backends,
    make_member,
    parse_networks,
    parse_tags,
    validate_address,
    validate_name,
    validate_port,
    validate_tags,
)

# --- tags -------------------------------------------------------------------


def test_parse_tags() -> None:
    assert parse_tags("") == {}
    assert parse_tags("a=1,b=,c=x=y") == {"a": "1", "b": "", "c": "x=y"}


@pytest.mark.parametrize("text", ["role", "role=backend,", ",role=backend", "a=1,,b=2"])
def test_parse_tags_malformed(text: str) -> None:
    with pytest.raises(InvalidMember, match="malformed tag"):
        parse_tags(text)


def test_parse_tags_duplicate() -> None:
    with pytest.raises(InvalidMember, match="duplicate tag 'role'"):
        parse_tags("role=backend,role=balancer")


def test_too_many_tags() -> None:
    tags = {"role": "backend", "port": "80"} | {f"t{i}": "x" for i in range(MAX_TAGS - 1)}
    assert len(tags) == MAX_TAGS + 1
    with pytest.raises(InvalidMember, match=rf"member s1: {MAX_TAGS + 1} tags, at most {MAX_TAGS}"):
        make_member("s1", "10.0.0.1", tags)
    text = ",".join(f"{k}={v}" for k, v in tags.items())
    with pytest.raises(InvalidMember, match="tags, at most"):
        parse_event_line(f"s1\t10.0.0.1\t\t{text}")


def test_max_tags_accepted() -> None:
    tags = {"role": "backend", "port": "80"} | {f"t{i}": "x" for i in range(MAX_TAGS - 2)}
    assert len(validate_tags(tags)) == MAX_TAGS


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"ro le": "backend"}, "invalid tag name 'ro le'"),
        ({"": "x"}, "invalid tag name ''"),
        ({"k" * 65: "x"}, "invalid tag name"),
        ({"role": "back end"}, "invalid value 'back end' of tag role"),
        ({"role": "backend\n"}, r"invalid value 'backend\\n' of tag role"),
        ({"note": "x" * 129}, r"invalid value 'xxxx.*\.\.\. of tag note"),
        ({"note": "héllo"}, "invalid value 'héllo' of tag note"),
    ],
)
def test_invalid_tags(tags: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidMember, match=f"member s9: {message}"):
        validate_tags(tags, member="s9")


# --- names ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s1", "S", "web-01.eu_west", "0", "a" * 63, "x.-_"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "bad name",
        "s1\n",
        "s1\nserver evil 6.6.6.6:80",
        "#comment",
        "s1#x",
        "'quoted'",
        '"s1"',
        "-lead",
        ".lead",
        "_lead",
        "sérveur",
        "\uff53\uff11",  # fullwidth letter and digit
        "s\u200b1",  # zero-width space
        "a" * 64,
        "a" * 10_000,
        "s1\t",
        "s/1",
        "..",
    ],
)
def test_invalid_names_name_the_value(name: str) -> None:
    with pytest.raises(InvalidMember, match="invalid member name") as exc:
        validate_name(name)
    # The value is shown escaped and bounded, never raw.
    message = str(exc.value)
    assert repr(name)[:20] in message
    assert "\n" not in message
    assert len(message) < 200
    if "\t" not in name and "\n" not in name:
        with pytest.raises(InvalidMember, match="invalid member name"):
            parse_event_line(f"{name}\t10.0.0.1\t\trole=backend,port=3000")


def test_invalid_name_error_escapes_newlines() -> None:
    with pytest.raises(InvalidMember) as exc:
        validate_name("s1\nserver evil")
    assert "'s1\\nserver evil'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_very_long_name_is_truncated_in_message() -> None:
    with pytest.raises(InvalidMember) as exc:
        validate_name("x" * 10_000)
    assert "..." in str(exc.value)
    assert len(str(exc.value)) < 200


# --- addresses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("172.18.0.3", "172.18.0.3"),
        ("10.0.0.255", "10.0.0.255"),
        ("fd00::3", "fd00::3"),
        ("FD00:0000:0000:0000:0000:0000:0000:0003", "fd00::3"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_valid_addresses(address: str, expected: str) -> None:
    assert validate_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "localhost",
        "172.18.0",
        "172.18.0.256",
        "172.18.0.3 ",
        " 172.18.0.3",
        "172.18.0.3:3000",
        "[fd00::1]",
        "fd00:::1",
        "fd00::g",
        "1.2.3.4/32",
        "１.２.３.４",  # noqa: RUF001
        "1.2.3.4\nserver evil",
    ],
)
def test_invalid_addresses_name_member_and_value(address: str) -> None:
    with pytest.raises(InvalidMember, match="member s1: invalid address") as exc:
        validate_address(address, member="s1")
    assert repr(address)[:20] in str(exc.value)
    assert "not an IPv4 or IPv6 address" in str(exc.value)


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "::", "224.0.0.1", "239.1.2.3", "ff02::1"],
)
def test_unspecified_and_multicast_refused(address: str) -> None:
    with pytest.raises(InvalidMember, match=rf"member s1: address {re.escape(address)} cannot"):
        make_member("s1", address, {"role": "backend", "port": "80"})


@pytest.mark.parametrize(
    "address", ["fe80::1%eth0 x", "fe80::1%a\nserver evil 6.6.6.6:80", "fe80::1%#"]
)
def test_ipv6_scope_id_with_hostile_text_is_refused(address: str) -> None:
    with pytest.raises(InvalidMember):
        validate_address(address, member="s1")


# --- ports ------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3000", 3000), ("65535", 65535)])
def test_valid_ports(value: str, expected: int) -> None:
    assert validate_port(value) == expected
    assert make_member("s1", "10.0.0.1", {"role": "backend", "port": value}).port == expected


def test_port_int_accepted() -> None:
    assert validate_port(8080) == 8080


@pytest.mark.parametrize(
    "value",
    ["0", "65536", "99999", "abc", "٣", "\uff13", "²", "-1", "+80", " 80", "80 ", "8.0", "0x50"],
)
def test_invalid_ports_name_member_and_value(value: str) -> None:
    with pytest.raises(InvalidMember, match="member s1: invalid port") as exc:
        validate_port(value, member="s1")
    assert repr(value) in str(exc.value)
    assert "expected 1-65535" in str(exc.value)


@pytest.mark.parametrize("value", [None, ""])
def test_missing_port(value: str | None) -> None:
    with pytest.raises(InvalidMember, match="member s1: backend has no 'port' tag"):
        validate_port(value, member="s1")


def test_backend_without_port_tag_refused() -> None:
    with pytest.raises(InvalidMember, match="backend has no 'port' tag"):
        parse_event_line("s1\t10.0.0.1\t\trole=backend")


def test_port_tag_as_unicode_digit_refused_via_event_line() -> None:
    # '٣' (Arabic-Indic three) is str.isdigit() but not a port: the tag check refuses it first.
    with pytest.raises(InvalidMember, match="member s1: invalid value '٣' of tag port"):
        parse_event_line("s1\t10.0.0.1\t\trole=backend,port=٣")


def test_huge_port_is_invalid_member() -> None:
    try:
        validate_port("9" * 5000, member="s1")
    except InvalidMember:
        return
    except ValueError as exc:
        raise AssertionError(f"not an InvalidMember: {exc!r}") from None
    raise AssertionError("accepted")


def test_balancer_port_tag_is_ignored() -> None:
    member = make_member("ha", "10.0.0.2", {"role": "balancer", "port": "nonsense"})
    assert member.port is None


# --- roles and statuses -----------------------------------------------------


@pytest.mark.parametrize("role", ["", "Backend", "web", "backend ", "balancer2"])
def test_unknown_roles(role: str) -> None:
    tags = {"role": role, "port": "80"} if " " not in role else {"port": "80"}
    with pytest.raises(InvalidMember, match=r"member s1: unknown role") as exc:
        make_member("s1", "10.0.0.1", tags)
    assert "expected one of backend, balancer" in str(exc.value)


def test_unknown_status() -> None:
    with pytest.raises(InvalidMember, match="member s1: unknown status 'zombie'"):
        make_member("s1", "10.0.0.1", {"role": "backend", "port": "80"}, status="zombie")


@pytest.mark.parametrize("status", ["alive", "leaving", "left", "failed", "none", "reap"])
def test_known_statuses(status: str) -> None:
    assert make_member("s1", "10.0.0.1", {"role": "balancer"}, status).status == status


# --- Member -----------------------------------------------------------------


def test_endpoint_brackets_ipv6_only() -> None:
    assert Member("a", "10.1.2.3", "backend", 80).endpoint == "10.1.2.3:80"
    assert Member("a", "fd00::1", "backend", 80).endpoint == "[fd00::1]:80"
    assert Member("a", "::ffff:10.1.2.3", "backend", 80).endpoint == "[::ffff:10.1.2.3]:80"


def test_members_sort_by_name_and_ignore_tags_in_equality() -> None:
    a = Member("a", "10.0.0.2", "backend", 80, tags={"x": "1"})
    b = Member("b", "10.0.0.1", "backend", 80)
    assert sorted([b, a]) == [a, b]
    assert a == Member("a", "10.0.0.2", "backend", 80, tags={"x": "2"})


# --- alive_backends ---------------------------------------------------------


def _backend(name: str, address: str, port: int = 3000, status: str = "alive") -> Member:
    return make_member(name, address, {"role": "backend", "port": str(port)}, status)


def test_alive_backends_filters_and_sorts() -> None:
    members = [
        _backend("s3", "10.0.0.3"),
        make_member("ha", "10.0.0.1", {"role": "balancer"}),
        _backend("s1", "10.0.0.11"),
        _backend("s2", "10.0.0.2", status="failed"),
        _backend("s4", "10.0.0.4", status="left"),
        _backend("s5", "10.0.0.5", status="leaving"),
    ]
    result = alive_backends(members)
    assert [m.name for m in result.members] == ["s1", "s3"]
    assert result.refused == []


def test_alive_backends_refuses_duplicate_names() -> None:
    result = alive_backends([_backend("s1", "10.0.0.9"), _backend("s1", "10.0.0.1")])
    assert [m.address for m in result.members] == ["10.0.0.1"]
    assert result.refused == ["member s1: name listed twice"]


def test_alive_backends_duplicate_name_of_dead_member_is_fine() -> None:
    result = alive_backends([_backend("s1", "10.0.0.9", status="left"), _backend("s1", "10.0.0.1")])
    assert [m.address for m in result.members] == ["10.0.0.1"]
    assert result.refused == []


def test_alive_backends_refuses_duplicate_endpoints() -> None:
    result = alive_backends(
        [_backend("s2", "10.0.0.1"), _backend("s1", "10.0.0.1"), _backend("s3", "10.0.0.1", 3001)]
    )
    assert [m.name for m in result.members] == ["s1", "s3"]
    assert result.refused == ["member s2: endpoint 10.0.0.1:3000 already used by s1"]


def test_alive_backends_shared_endpoint_goes_to_the_latest_to_join() -> None:
    # s1 was killed; Docker gave its address to s7 before Serf declared s1 failed.
    members = [_backend("s1", "10.0.0.1"), _backend("s7", "10.0.0.1"), _backend("s2", "10.0.0.2")]
    result = alive_backends(members, joined={"s1": 1, "s2": 2, "s7": 3})
    assert [m.name for m in result.members] == ["s2", "s7"]
    assert result.refused == [
        "member s1: endpoint 10.0.0.1:3000 already used by s7 (which joined later)"
    ]


def test_alive_backends_duplicate_ipv6_endpoint_spelled_differently() -> None:
    result = alive_backends([_backend("a", "fd00::1"), _backend("b", "fd00:0::0:1")])
    assert [m.name for m in result.members] == ["a"]
    assert result.refused == ["member b: endpoint [fd00::1]:3000 already used by a"]


def test_alive_backends_names_match_name_re() -> None:
    result = alive_backends([_backend(f"n{i}", f"10.0.1.{i}") for i in range(1, 20)])
    assert all(NAME_RE.fullmatch(m.name) for m in result.members)
    assert len(result.members) == 19


# --- JoinOrder ----------------------------------------------------------------


def test_join_order_ranks_newcomers_later_and_forgets_the_departed() -> None:
    order = JoinOrder()
    assert order.update(["s1", "s2"]) == {"s1": 1, "s2": 1}, "first seen together: a tie"
    assert order.update(["s1", "s2", "s7"]) == {"s1": 1, "s2": 1, "s7": 2}
    assert order.update(["s2", "s7"]) == {"s2": 1, "s7": 2}
    assert order.update(["s1", "s2", "s7"])["s1"] == 3, "back after leaving: the latest"
    assert order.update(["s1", "s2", "s7"])["s1"] == 3, "nothing new: nothing changes"


# --- AddressPolicy ------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "is a loopback address"),
        ("127.9.9.9", "is a loopback address"),
        ("::1", "is a loopback address"),
        ("::ffff:127.0.0.1", "is a loopback address"),
        ("169.254.0.5", "is a link-local address"),
        ("fe80::1", "is a link-local address"),
        ("172.18.0.2", "is the balancer's own address"),
        ("10.0.0.1", "is outside the cluster's networks (172.18.0.0/16, fd00::/8)"),
        ("2001:db8::1", "is outside the cluster's networks (172.18.0.0/16, fd00::/8)"),
        ("172.18.0.3", None),
        ("fd00::3", None),
    ],
)
def test_address_policy(address: str, why: str | None) -> None:
    policy = AddressPolicy(parse_networks(["172.18.0.0/16", "fd00::/8"]), frozenset({"172.18.0.2"}))
    assert policy.refusal(address) == why


def test_address_policy_without_networks_still_refuses_the_never_list() -> None:
    assert AddressPolicy().refusal("10.0.0.1") is None
    assert AddressPolicy().refusal("127.0.0.1") == "is a loopback address"


@pytest.mark.parametrize("bad", ["10.0.0/33", "x", "", "172.18.0.0/16/1"])
def test_parse_networks_names_the_bad_one(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a network"):
        parse_networks(["172.18.0.0/16", bad])


def test_alive_backends_applies_the_address_policy_before_names() -> None:
    policy = AddressPolicy(parse_networks(["10.0.0.0/8"]))
    result = alive_backends([_backend("s1", "127.0.0.1"), _backend("s1", "10.0.0.1")], None, policy)
    assert [m.address for m in result.members] == ["10.0.0.1"], "the hostile twin cannot win"
    assert result.refused == ["member s1: address 127.0.0.1 is a loopback address"]
