"""lbcluster.events: the lab's event-handler script input, and one Event for both ways in."""

from __future__ import annotations

import pytest

from lbcluster.events import (
    JOIN_SEEN,
    MAX_STDIN,
    Event,
    InvalidEvent,
    parse_event_line,
    parse_event_lines,
    script_event,
)
from lbcluster.members import InvalidMember, Member

# --- parse_event_line -------------------------------------------------------


def test_event_line_backend_from_tags() -> None:
    member = parse_event_line("s1\t172.18.0.3\t\trole=backend,port=3000\n")
    assert member == Member(name="s1", address="172.18.0.3", role="backend", port=3000)
    assert member.status == "alive"
    assert dict(member.tags) == {"role": "backend", "port": "3000"}
    assert member.endpoint == "172.18.0.3:3000"


def test_event_line_balancer_has_no_port() -> None:
    member = parse_event_line("ha\t172.18.0.2\t\trole=balancer")
    assert member.role == "balancer"
    assert member.port is None


def test_event_line_crlf_is_stripped() -> None:
    assert parse_event_line("s1\t10.0.0.1\t\trole=backend,port=80\r\n").port == 80


def test_event_line_role_column_used_when_no_role_tag() -> None:
    member = parse_event_line("s1\t10.0.0.1\tbackend\tport=8080")
    assert member.role == "backend"
    assert member.port == 8080
    assert member.tags["role"] == "backend"


def test_event_line_role_tag_wins_over_role_column() -> None:
    member = parse_event_line("ha\t10.0.0.1\tbackend\trole=balancer")
    assert member.role == "balancer"
    assert member.port is None


def test_event_line_role_column_alone_with_no_tags() -> None:
    member = parse_event_line("ha\t10.0.0.1\tbalancer\t")
    assert member.role == "balancer"
    assert dict(member.tags) == {"role": "balancer"}


def test_event_line_keeps_extra_tags() -> None:
    member = parse_event_line("s1\t10.0.0.1\t\trole=backend,port=80,zone=eu-west-1,v=1.2")
    assert dict(member.tags) == {"role": "backend", "port": "80", "zone": "eu-west-1", "v": "1.2"}
    assert member.describe() == "s1 10.0.0.1 port=80 role=backend v=1.2 zone=eu-west-1"


def test_event_line_ipv6() -> None:
    member = parse_event_line("s6\tfd00:0:0::0003\t\trole=backend,port=3000")
    assert member.address == "fd00::3"  # compressed
    assert member.endpoint == "[fd00::3]:3000"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "s1",
        "s1\t10.0.0.1\t",
        "s1 10.0.0.1 backend role=backend,port=3000",
        "s1\t10.0.0.1\t\trole=backend,port=3000\textra",
    ],
)
def test_event_line_wrong_field_count(line: str) -> None:
    with pytest.raises(InvalidMember, match="malformed member line") as exc:
        parse_event_line(line)
    assert "expected 4 tab-separated fields" in str(exc.value)


def test_event_line_field_count_reported() -> None:
    with pytest.raises(InvalidMember, match="got 2"):
        parse_event_line("a\tb")


def test_event_line_without_role_is_refused() -> None:
    with pytest.raises(InvalidMember, match=r"member s1: unknown role ''"):
        parse_event_line("s1\t10.0.0.1\t\tport=3000")


# --- parse_event_lines ------------------------------------------------------


def test_event_lines_skip_blank_and_refuse_bad() -> None:
    result = parse_event_lines(
        [
            "s1\t10.0.0.1\t\trole=backend,port=80",
            "",
            "   ",
            "garbage",
            "s2\t10.0.0.2\t\trole=backend,port=81",
        ]
    )
    assert [m.name for m in result.members] == ["s1", "s2"]
    assert len(result.refused) == 1
    assert "malformed member line 'garbage'" in result.refused[0]


# --- script_event -------------------------------------------------------------


def test_script_event_parses_member_lines() -> None:
    event = script_event("member-join", "", "s1\t10.0.0.1\t\trole=backend,port=80\ngarbage\n")
    assert [m.name for m in event.members.members] == ["s1"]
    assert len(event.members.refused) == 1
    assert not event.is_hint


def test_script_event_user_event_is_no_hint() -> None:
    # Only the agent's log says that a member joined (see serfrpc.is_join_log).
    assert not script_event("user", "deploy", "payload").is_hint
    assert not script_event("user", "lbcluster-hint", "payload").is_hint
    assert Event(JOIN_SEEN).is_hint
    assert (
        script_event("user", "deploy", "s1\t10.0.0.1\t\trole=backend,port=80").members.members == []
    )
    assert script_event("member-join", "lbcluster-hint", "").user_event == ""


@pytest.mark.parametrize(
    ("name", "stdin", "reason"),
    [
        ("bogus", "", "SERF_EVENT is 'bogus'"),
        ("", "", "SERF_EVENT is nothing"),
        ("member-join", "x" * (MAX_STDIN + 1), "event input larger than"),
    ],
)
def test_script_event_refuses_what_is_not_an_event(name: str, stdin: str, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        script_event(name, "", stdin)


def test_event_defaults() -> None:
    assert Event("member-leave").members.members == []
