"""lbcluster.serfrpc: the Serf RPC client against a fake agent speaking msgpack."""

from __future__ import annotations

import pytest
from fakeserf import FakeSerfAgent, rpc_member

from lbcluster.serfcli import SerfUnavailable
from lbcluster.serfrpc import SerfRPC, parse_rpc_members


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
    assert parse_rpc_members(first["Members"]).members[0].address == "172.18.0.3"
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
    result = parse_rpc_members([raw, rpc_member("s2", "10.0.0.2")])
    assert [m.name for m in result.members] == ["s2"]
    assert len(result.refused) == 1
    assert reason in result.refused[0]
