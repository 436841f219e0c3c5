"""lbcluster.serfrpc: the Serf RPC client against a fake agent speaking msgpack."""

from __future__ import annotations

import time

import pytest
from fakeserf import FakeSerfAgent, rpc_member

from lbcluster.events import InvalidEvent
from lbcluster.serfrpc import (
    Agent,
    SerfRPC,
    SerfUnavailable,
    decode_event,
    decode_members,
    is_join_log,
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


def test_join_asks_the_agent_and_says_how_many_answered() -> None:
    with FakeSerfAgent() as agent:
        joined = Agent(agent.addr, "token").join(["172.18.0.3:7946", "172.18.0.4:7946"])
    assert joined == 2
    assert agent.joins == [{"Existing": ["172.18.0.3:7946", "172.18.0.4:7946"], "Replay": False}]


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
        agent.push({"Event": "user", "Name": "deploy", "Payload": b"", "LTime": 3})
        first = rpc.next_event(2)
        second = rpc.next_event(2)
    assert first is not None and first["Event"] == "member-join"
    assert decode_members(first["Members"]).members[0].address == "172.18.0.3"
    assert second == {"Event": "user", "Name": "deploy", "Payload": b"", "LTime": 3}


JOINED = "2026/12/07 00:48:21 [INFO] serf: EventMemberJoin: s5 172.18.0.7"


def test_the_agents_log_comes_on_the_event_stream_backlog_first() -> None:
    with FakeSerfAgent() as agent:
        agent.backlog = ["2026/12/07 00:48:15 [INFO] agent.ipc: Accepted client", JOINED]
        with SerfRPC(agent.addr, "token") as rpc:
            rpc.subscribe(log=True)
            agent.push({"Event": "member-join", "Members": [rpc_member("s5", "172.18.0.7")]})
            agent.log(JOINED)
            records = [rpc.next_event(2) for _ in range(4)]
    assert records[:2] == [{"Log": line} for line in agent.backlog]
    assert records[2] is not None and records[2]["Event"] == "member-join"
    assert records[3] == {"Log": JOINED}
    assert [r is not None and is_join_log(r) for r in records] == [False, True, False, True]


def test_stream_records_that_come_before_an_answer_wait_for_next_event() -> None:
    # Serf streams as soon as the stream is set up: records may come before the
    # answer to the next command on the connection (here, the monitor's).
    with FakeSerfAgent() as agent:
        agent.backlog = [JOINED]
        with SerfRPC(agent.addr, "token") as rpc:
            rpc.subscribe()
            agent.push({"Event": "member-leave", "Members": [rpc_member("s1", "172.18.0.3")]})
            time.sleep(0.1)  # the event is on the wire before the monitor is asked for
            seq = rpc._send("monitor", {"LogLevel": "INFO"})
            rpc._monitor_seq = seq
            rpc._header("monitor", seq, 2)
            first, second = rpc.next_event(2), rpc.next_event(2)
    assert first is not None and first["Event"] == "member-leave"
    assert second == {"Log": JOINED}


@pytest.mark.parametrize(
    "line",
    [
        "2026/12/07 00:48:21 [INFO] serf: EventMemberLeave: s5 172.18.0.7",
        "2026/12/07 00:48:21 [INFO] agent: Received event: member-join",
        # A member named after the line (Serf logs its name) is not a join of its own.
        "2026/12/07 00:48:21 [INFO] serf: EventMemberFailed: x [INFO] serf: EventMemberJoin: y",
        "[INFO] serf: EventMemberJoin: s5 172.18.0.7",
    ],
)
def test_only_the_agents_join_line_is_a_join(line: str) -> None:
    assert not is_join_log({"Log": line})
    assert is_join_log({"Log": JOINED})
    assert not is_join_log({"Event": "member-join"})


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
    user = decode_event({"Event": "user", "Name": "deploy", "Payload": b""})
    assert (user.name, user.user_event, user.is_hint) == ("user", "deploy", False)
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
