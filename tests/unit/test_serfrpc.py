"""lbcluster.serfrpc: the Serf RPC client against a fake agent speaking msgpack."""

from __future__ import annotations

import pytest
from fakeserf import FakeSerfAgent, rpc_member

from lbcluster.events import InvalidEvent
from lbcluster.serfrpc import (
    Agent,
    SerfRPC,
    SerfUnavailable,
    decode_event,
    decode_members,
)


def test_members_are_validated_and_addresses_decoded() -> None:
    with FakeSerfAgent() as agent:
        agent.members = [
            rpc_member("ha", "172.18.0.2", role="balancer", port=None),
            rpc_member("s1", "172.18.0.3"),
            rpc_member("bad name", "172.18.0.9"),
        ]
        with SerfRPC(agent.addr, "token") as rpc:
            view = rpc.members()
    assert [(m.name, m.address, m.port) for m in view.members] == [
        ("ha", "172.18.0.2", None),
        ("s1", "172.18.0.3", 3000),
    ]
    assert len(view.refused) == 1
    assert "invalid member name 'bad name'" in view.refused[0]
    assert agent.commands == ["handshake", "auth", "members"]


def test_members_filtered_asks_the_agent_for_only_the_matching_members() -> None:
    with FakeSerfAgent() as agent:
        agent.members = [
            rpc_member("ha", "172.18.0.2", role="balancer", port=None),
            rpc_member("ha-old", "172.18.0.5", role="balancer", port=None, status="left"),
            rpc_member("s1", "172.18.0.3"),
        ]
        with SerfRPC(agent.addr, "token") as rpc:
            balancers = rpc.members_filtered({"role": "balancer"})
            backends = rpc.members_filtered({"role": "backend"}, status="")
    assert [m.name for m in balancers.members] == ["ha"]
    assert [m.name for m in backends.members] == ["s1"]
    assert agent.commands == ["handshake", "auth", "members-filtered", "members-filtered"]


def test_wrong_token_is_refused_with_the_agents_reason() -> None:
    with FakeSerfAgent() as agent, pytest.raises(SerfUnavailable, match="auth: Invalid auth"):
        SerfRPC(agent.addr, "wrong")


def test_no_agent() -> None:
    with FakeSerfAgent() as agent:
        addr = agent.addr
    with pytest.raises(SerfUnavailable, match=f"cannot connect to the Serf agent at {addr}"):
        SerfRPC(addr, "token", timeout=1)


def test_streamed_events_arrive_in_order_and_quiet_returns_none() -> None:
    with FakeSerfAgent() as agent, SerfRPC(agent.addr, "token") as rpc:
        rpc.subscribe()
        assert rpc.next_event(0.05) is None
        agent.push({"Event": "member-join", "Members": [rpc_member("s1", "172.18.0.3")]})
        agent.push({"Event": "user", "Name": "lbcluster-hint", "Payload": b"", "LTime": 3})
        first = rpc.next_event(2)
        second = rpc.next_event(2)
    assert first is not None and first["Event"] == "member-join"
    assert decode_members(first["Members"]).members[0].address == "172.18.0.3"
    assert second == {"Event": "user", "Name": "lbcluster-hint", "Payload": b"", "LTime": 3}


def test_a_closed_connection_is_reported() -> None:
    with FakeSerfAgent() as agent:
        rpc = SerfRPC(agent.addr, "token")
        rpc.subscribe()
    with pytest.raises(SerfUnavailable, match="closed the connection"):
        rpc.next_event(2)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"Name": "s1", "Addr": b"\x01\x02\x03", "Tags": {}, "Status": "alive"}, "3 bytes"),
        ({"Name": 7, "Addr": b"\x0a\x00\x00\x01", "Tags": {}, "Status": "alive"}, "not a string"),
        ({"Name": "s1", "Addr": b"\x0a\x00\x00\x01", "Tags": ["x"]}, "tags are not strings"),
        ("s1", "not a map"),
        ({"Name": "s1", "Addr": 5, "Tags": {}}, "not a byte string"),
    ],
)
def test_malformed_members_are_refused_one_by_one(raw: object, reason: str) -> None:
    result = decode_members([raw, rpc_member("s2", "10.0.0.2")])
    assert [m.name for m in result.members] == ["s2"]
    assert len(result.refused) == 1
    assert reason in result.refused[0]


def test_decode_members_refuses_one_by_one_and_names_why() -> None:
    result = decode_members(
        [
            rpc_member("s1", "172.18.0.3"),
            rpc_member("bad name", "172.18.0.4"),
            rpc_member("s4", "172.18.0.5", port="0"),
            rpc_member("s5", "172.18.0.6", role="database"),
            rpc_member("s6", "172.18.0.7", status="zombie"),
            rpc_member("s7", "172.18.0.8", tags={"role": "backend", "port": 80}),
            rpc_member("s8", "0.0.0.0"),
            None,
            rpc_member("s6", "[fd00::6]:7946", status="failed"),
        ]
    )
    assert [(m.name, m.address, m.port, m.status) for m in result.members] == [
        ("s1", "172.18.0.3", 3000, "alive"),
        ("s6", "fd00::6", 3000, "failed"),
    ]
    joined = "\n".join(result.refused)
    for fragment in (
        "invalid member name 'bad name'",
        "member s4: invalid port '0'",
        "member s5: unknown role 'database'",
        "member s6: unknown status 'zombie'",
        "member 's7': tags are not strings",
        "member s8: address 0.0.0.0 cannot receive traffic",
        "member entry is not a map",
    ):
        assert fragment in joined
    assert len(result.refused) == 7


def test_decode_event_member_events_user_events_and_refusals() -> None:
    join = decode_event({"Event": "member-join", "Members": [rpc_member("s1", "10.0.0.1")]})
    assert (join.name, [m.name for m in join.members.members]) == ("member-join", ["s1"])
    hint = decode_event({"Event": "user", "Name": "lbcluster-hint", "Payload": b""})
    assert hint.is_hint
    assert decode_event({"Event": "user", "Name": 7}).user_event == ""
    no_list = decode_event({"Event": "member-leave", "Members": "x"})
    assert no_list.members.refused == ["member-leave event without a member list"]
    with pytest.raises(InvalidEvent, match=r"event 'bogus\\n' from the Serf stream"):
        decode_event({"Event": "bogus\n"})
    with pytest.raises(InvalidEvent, match="not a Serf event"):
        decode_event({})


def test_agent_keeps_one_connection_and_reconnects_after_a_failure() -> None:
    with FakeSerfAgent() as fake:
        fake.members = [rpc_member("s1", "10.0.0.1")]
        agent = Agent(fake.addr, "token")
        assert [m.name for m in agent.members().members] == ["s1"]
        assert [m.name for m in agent.members().members] == ["s1"]
        assert fake.commands == ["handshake", "auth", "members", "members"]
        fake.members = "broken"  # type: ignore[assignment]
        with pytest.raises(SerfUnavailable, match="no member list"):
            agent.members()
        fake.members = [rpc_member("s2", "10.0.0.2")]
        assert [m.name for m in agent.members().members] == ["s2"]
        assert fake.commands.count("handshake") == 2
        agent.close()
