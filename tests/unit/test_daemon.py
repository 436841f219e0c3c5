"""lbcluster.daemon: the handler service, fed by a fake Serf agent's RPC event stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from fakeserf import FakeSerfAgent, rpc_member
from fakesock import FakeAdmin, FakeMaster, FakeSocket
from helpers import Cluster, servers

from lbcluster import plan
from lbcluster.daemon import HINT_GAP_S, Daemon
from lbcluster.events import JOIN_SEEN, Event
from lbcluster.handler import Handler
from lbcluster.journal import EventLog
from lbcluster.members import ParseResult
from lbcluster.serfrpc import Agent

HA = rpc_member("ha", "172.18.0.2", role="balancer", port=None)
S1 = rpc_member("s1", "172.18.0.3")
S2 = rpc_member("s2", "172.18.0.4")


def eventually(probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Running:
    def __init__(self, cluster: Cluster, agent: FakeSerfAgent, admin: FakeAdmin) -> None:
        self.cluster = cluster
        self.agent = agent
        self.admin = admin
        self.master = FakeMaster("ok")


@pytest.fixture
def running(script: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    cluster = script
    monkeypatch.setattr(plan, "CONSOLIDATE_S", 0.5)
    admin = FakeAdmin({"s1": "172.18.0.3:3000"})
    with FakeSerfAgent() as agent:
        agent.members = [HA, S1]
        paths = replace(cluster.paths, serf_rpc_addr=agent.addr)
        run = Running(cluster, agent, admin)
        with (
            FakeSocket(paths.admin_socket, admin),
            FakeSocket(paths.master_socket, run.master) as master_sock,
        ):
            run.master_sock = master_sock  # type: ignore[attr-defined]
            log = EventLog(paths.event_log)
            handler = Handler(paths, log, Agent(agent.addr, "token").members)
            daemon = Daemon(handler, paths, log, "token", reconcile_s=0.3)
            thread = threading.Thread(target=daemon.run, daemon=True)
            thread.start()
            eventually(
                lambda: servers(cluster.live() or "server x") == ["server s1 172.18.0.3:3000"]
            )
            yield run
            daemon.stopping.set()
            thread.join(timeout=5)
            assert not thread.is_alive()


def test_a_streamed_join_goes_live_at_once_and_the_file_follows(running: Running) -> None:
    cluster, agent, admin = running.cluster, running.agent, running.admin
    agent.members = [HA, S1, S2]
    agent.push({"Event": "member-join", "Members": [S2]})
    eventually(lambda: admin.servers.get("s2") == ["172.18.0.4:3000", "UP"])
    eventually(lambda: set(cluster.nodes()) == {"s1", "s2"})
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000", "server s2 172.18.0.4:3000"]
    log = cluster.log()
    assert log[0] == f"serf: watching the agent's events at {agent.addr}"
    assert "member-join: s2 172.18.0.4 port=3000 role=backend" in log
    assert any(line.startswith("runtime: added s2 without a reload, live ") for line in log)
    # Once quiet, one reload makes s2 a server of the file (HAProxy 2.6 reuses
    # no connection to a server added at runtime).
    eventually(
        lambda: any(
            line.startswith("config: reloaded in ")
            and "to make s2 servers of the file (connection reuse)" in line
            for line in cluster.log()
        )
    )
    time.sleep(0.5)
    assert running.master.reloads == 1, "one reload, not one per reconcile"


def test_a_change_serf_never_announced_is_reconciled(running: Running) -> None:
    running.agent.members = [HA, S2]  # s1 gone and s2 come, and no event said so
    eventually(lambda: set(running.admin.servers) == {"s2"})
    eventually(lambda: set(running.cluster.nodes()) == {"s2"})
    assert "runtime: added s2; removed s1 without a reload" in " ".join(running.cluster.log())


def test_a_malformed_event_is_refused_and_the_next_one_handled(running: Running) -> None:
    running.agent.push({"Event": "bogus\n; rm -rf /", "Members": "x"})
    running.agent.push({"Event": "member-join", "Members": "not a list"})
    running.agent.members = [HA, S1, S2]
    running.agent.log("2026/12/07 00:48:21 [INFO] serf: EventMemberJoin: s2 172.18.0.4")
    hint = "join-seen: the agent saw a member join, reading the live membership"
    eventually(lambda: hint in running.cluster.log())
    eventually(lambda: "s2" in running.admin.servers)
    log = running.cluster.log()
    assert "refused: event 'bogus\\n; rm -rf /' from the Serf stream: not a Serf event" in log
    assert "refused: member-join event without a member list" in log
    assert running.cluster.state()["refused"] == 2


def test_it_waits_for_the_agent_and_says_so_once(script: Cluster) -> None:
    cluster = script
    with FakeSerfAgent() as agent:
        addr = agent.addr  # nothing listens there any more
    paths = replace(cluster.paths, serf_rpc_addr=addr)
    log = EventLog(paths.event_log)
    handler = Handler(paths, log, Agent(addr, "token").members)
    daemon = Daemon(handler, paths, log, "token", reconcile_s=0.3)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    time.sleep(2.5)  # a few retries (one per second)
    daemon.stopping.set()
    thread.join(timeout=5)
    lines = cluster.log()
    assert len(lines) == 1
    assert lines[0].startswith(f"serf: cannot connect to the Serf agent at {addr}")
    assert lines[0].endswith("retrying every 1 s")


def test_joins_seen_in_a_burst_read_the_membership_once_per_gap(script: Cluster) -> None:
    # When its stream connects, Serf first sends the log lines it kept: a
    # hundred joins must not be a hundred reads of the membership.
    handled: list[str] = []

    class Counting(Handler):
        def handle(self, event: Event, received: float | None, *, defer_file: bool = False) -> None:
            handled.append(event.name)

    log = EventLog(script.paths.event_log)
    counting = Counting(script.paths, log, ParseResult)
    daemon = Daemon(counting, script.paths, log, "token", 3600)
    daemon.next_reconcile = float("inf")
    start = time.monotonic()
    for i in range(100):
        daemon.join_seen(start + i * 0.0001)
    assert handled == [JOIN_SEEN]
    assert daemon.next_reconcile == pytest.approx(start + HINT_GAP_S)
    daemon.join_seen(start + HINT_GAP_S + 0.001)
    assert handled == [JOIN_SEEN, JOIN_SEEN]
