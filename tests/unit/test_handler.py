"""lbcluster.handler: one Serf event end to end, with fake `serf` and `haproxy` executables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fakeserf import FakeSerfAgent, rpc_member
from fakesock import FakeAdmin, FakeMaster, FakeSocket
from helpers import SETTINGS, STAMP, Cluster, serf_member, servers

from lbcluster import events
from lbcluster import handler as handler_module
from lbcluster.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from lbcluster.handler import REJOIN_BACKOFF_S, Handler, HandlerError
from lbcluster.journal import EventLog, update_state
from lbcluster.members import Member
from lbcluster.serfrpc import Agent

HA = serf_member("ha", "172.18.0.2", role="balancer", port=None)
S1 = serf_member("s1", "172.18.0.3")
S2 = serf_member("s2", "172.18.0.4")
S1_LINE = "s1\t172.18.0.3\t\trole=backend,port=3000"
S2_LINE = "s2\t172.18.0.4\t\trole=backend,port=3000"


# --- member events ----------------------------------------------------------


def test_member_join_writes_nodes_log_and_config(cluster: Cluster) -> None:
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1, S2) == EXIT_OK

    assert cluster.nodes() == {
        "s1": "s1 172.18.0.3 3000 port=3000,role=backend\n",
        "s2": "s2 172.18.0.4 3000 port=3000,role=backend\n",
    }
    assert cluster.live() == cluster.expected_config(("s1", "172.18.0.3"), ("s2", "172.18.0.4"))
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000", "server s2 172.18.0.4:3000"]
    assert cluster.log() == [
        "member-join: s1 172.18.0.3 port=3000 role=backend",
        "member-join: s2 172.18.0.4 port=3000 role=backend",
        "nodes: added s1,s2",
        "config: written; HAProxy is not running, it loads it when it starts",
    ]
    assert cluster.queries() == 1, "the membership is read once, from the agent"
    state = cluster.state()
    assert state["events"] == 1
    assert state["last_event"] == "member-join"
    assert "errors" not in state
    assert "reloads" not in state


def test_membership_comes_from_the_agent_not_stdin(cluster: Cluster) -> None:
    # The event names only s1; the live view (the truth) has s1 and s2.
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1) == EXIT_OK
    assert sorted(cluster.nodes()) == ["s1", "s2"]


def test_repeated_event_changes_nothing(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    before = cluster.paths.live_config.stat().st_mtime_ns
    assert cluster.event("member-update", S1) == EXIT_OK
    assert cluster.paths.live_config.stat().st_mtime_ns == before
    assert cluster.log()[-1] == "config: unchanged (1 servers: s1), no reload"
    assert not any(line.startswith("nodes:") for line in cluster.log()[2:])
    assert cluster.state()["events"] == 2


def test_member_leave_and_failed_remove_backends(cluster: Cluster) -> None:
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1, S2) == EXIT_OK
    cluster.members(HA, S1, {**S2, "Status": "left"})
    assert cluster.event("member-leave", S2) == EXIT_OK
    assert sorted(cluster.nodes()) == ["s1"]
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000"]
    assert "nodes: removed s2" in cluster.log()

    cluster.members(HA, {**S1, "Status": "failed"}, {**S2, "Status": "left"})
    assert cluster.event("member-failed", S1) == EXIT_OK
    assert cluster.nodes() == {}
    assert servers(cluster.live()) == []
    assert (
        cluster.log()[-1] == "config: written; HAProxy is not running, it loads it when it starts"
    )


def test_updated_address_updates_node_file(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    cluster.event("member-join", S1)
    moved = serf_member("s1", "172.18.0.9")
    cluster.members(HA, moved)
    assert cluster.event("member-update", moved) == EXIT_OK
    assert cluster.nodes()["s1"] == "s1 172.18.0.9 3000 port=3000,role=backend\n"
    assert "nodes: updated s1" in cluster.log()
    assert servers(cluster.live()) == ["server s1 172.18.0.9:3000"]


@pytest.mark.parametrize(
    ("event", "shown"),
    [("bogus", "'bogus'"), ("", "nothing"), ("member-join\nx", "'member-join\\nx'")],
)
def test_unknown_event_exits_2(script: Cluster, event: str, shown: str) -> None:
    script.members(HA, S1)
    assert script.run(event, S1_LINE) == EXIT_USAGE
    assert script.log() == [f"error: SERF_EVENT is {shown}: not a Serf event; nothing changed"]
    assert script.queries() == 0
    assert script.live() is None
    assert script.nodes() == {}
    assert script.state()["errors"] == 1
    assert script.state()["last_error"] == f"unknown event {shown}"


def test_missing_serf_event_variable_exits_2(script: Cluster) -> None:
    assert script.run(None) == EXIT_USAGE
    assert script.log() == ["error: SERF_EVENT is nothing: not a Serf event; nothing changed"]


def test_long_unknown_event_is_shortened(script: Cluster) -> None:
    assert script.run("x" * 1000) == EXIT_USAGE
    assert script.log() == [f"error: SERF_EVENT is '{'x' * 40}': not a Serf event; nothing changed"]


def test_malformed_stdin_refused_valid_members_apply(script: Cluster) -> None:
    cluster = script
    cluster.members(HA, S1, S2)
    stdin = "\n".join(
        [
            S1_LINE,
            "garbage",
            "bad name\t172.18.0.5\t\trole=backend,port=3000",
            "s3\t172.18.0.6\t\trole=backend,port=99999",
            "",
            S2_LINE,
        ]
    )
    assert cluster.run("member-join", stdin) == EXIT_OK
    log = cluster.log()
    assert log[:2] == [
        "member-join: s1 172.18.0.3 port=3000 role=backend",
        "member-join: s2 172.18.0.4 port=3000 role=backend",
    ]
    refused = [line for line in log if line.startswith("refused: ")]
    assert len(refused) == 3
    assert "refused: malformed member line 'garbage'" in refused[0]
    assert "invalid member name 'bad name'" in refused[1]
    assert "member s3: invalid port '99999'" in refused[2]
    assert sorted(cluster.nodes()) == ["s1", "s2"]
    assert len(servers(cluster.live())) == 2
    assert cluster.state()["refused"] == 3


def test_refused_members_in_the_live_view(cluster: Cluster) -> None:
    cluster.members(
        HA,
        S1,
        serf_member("evil\nserver x 6.6.6.6:80", "172.18.0.7"),
        serf_member("s9", "172.18.0.3"),  # s1's endpoint
    )
    assert cluster.event("member-join", S1) == EXIT_OK
    log = cluster.log()
    assert "refused: invalid member name 'evil\\nserver x 6.6.6.6:80'" in log[1]
    assert "refused: member s9: endpoint 172.18.0.3:3000 already used by s1" in log
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000"]
    assert "evil" not in (cluster.live() or "")
    assert "6.6.6.6" not in "".join(cluster.nodes().values())
    assert cluster.state()["refused"] == 2


def test_invalid_rendered_config_keeps_previous(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    good = cluster.live()

    cluster.members(HA, S1, S2)
    cluster.haproxy_fails(
        "[ALERT]    (9) : config : parsing [/x/.haproxy.cfg.new:50] : 'server s2' : bad\n"
    )
    assert cluster.event("member-join", S2) == EXIT_ERROR
    assert cluster.live() == good
    assert not cluster.paths.live_config.with_name(".haproxy.cfg.new").exists()
    last = cluster.log()[-1]
    assert last.startswith(f"error: haproxy -c rejected {cluster.paths.live_config.parent}/")
    assert "'server s2' : bad" in last
    assert last.endswith("; the last good configuration keeps serving")
    state = cluster.state()
    assert state["errors"] == 1
    assert "'server s2' : bad" in state["last_error"]


def test_agent_knowing_only_itself_does_not_wipe_nodes(cluster: Cluster) -> None:
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1, S2) == EXIT_OK
    nodes, config = cluster.nodes(), cluster.live()

    cluster.members(HA)  # a restarted agent, not joined yet
    assert cluster.event("member-join", HA) == EXIT_ERROR
    assert cluster.nodes() == nodes
    assert cluster.live() == config
    assert cluster.log()[-1] == (
        "error: the local agent knows no other member yet; keeping the last configuration"
        " (2 backends); the last good configuration keeps serving"
    )


def test_view_with_only_refused_others_is_not_a_transient_view(cluster: Cluster) -> None:
    # The agent does know other members (invalid ones): that is a real view, applied.
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    cluster.members(HA, serf_member("s1", "172.18.0.3", port="0"))
    assert cluster.event("member-update") == EXIT_OK
    assert cluster.nodes() == {}
    assert servers(cluster.live()) == []
    assert "refused: member s1: invalid port '0': expected 1-65535" in cluster.log()


def test_fresh_cluster_with_only_the_balancer_renders_empty(cluster: Cluster) -> None:
    cluster.members(HA)
    assert cluster.event("member-join", HA) == EXIT_OK
    assert servers(cluster.live()) == []
    assert cluster.nodes() == {}


def test_user_events_are_ignored(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("user", user_event="deploy") == EXIT_OK
    assert cluster.log()[-1] == "user: ignored (not a membership event)"
    assert cluster.queries() == 0
    assert cluster.live() is None
    assert cluster.state()["events"] == 1


def test_query_events_are_ignored(script: Cluster) -> None:
    # The service does not subscribe to queries; a handler script may be given them.
    script.members(HA, S1)
    assert script.run("query", "deploy payload\twith\ttabs") == EXIT_OK
    assert script.log() == ["query: ignored (not a membership event)"]
    assert script.queries() == 0


def test_a_join_in_the_agents_log_reads_the_live_membership(service: Cluster) -> None:
    service.members(HA, S1, S2)
    daemon, stream = service.service()
    service.agent.log("2026/12/07 00:48:21 [INFO] agent: Received event: member-join")
    service.agent.log("2026/12/07 00:48:21 [INFO] serf: EventMemberJoin: s2 172.18.0.4")
    assert daemon.step(stream) and daemon.step(stream)
    assert service.log()[0] == "join-seen: the agent saw a member join, reading the live membership"
    assert service.queries() == 1
    assert set(service.nodes()) == {"s1", "s2"}


def test_serf_unavailable_exits_1(script: Cluster, agent: FakeSerfAgent) -> None:
    agent.__exit__(None, None, None)  # nothing listens any more
    assert script.event("member-join", S1) == EXIT_ERROR
    assert script.log()[-1].startswith(
        f"error: cannot read the live membership: cannot connect to the Serf agent at {agent.addr}"
    )
    assert script.log()[-1].endswith("; the last good configuration keeps serving")
    assert script.live() is None


def test_wrong_rpc_token_exits_1_with_the_agents_reason(script: Cluster) -> None:
    script.rpc_token("wrong")
    assert script.event("member-join", S1) == EXIT_ERROR
    assert "auth: Invalid authentication token" in script.log()[-1]
    assert script.live() is None


@pytest.mark.parametrize("argv", [[], ["render"], ["reconcile"], ["serve"]])
def test_missing_rpc_token_exits_1_naming_the_file(script: Cluster, argv: list[str]) -> None:
    token = script.paths.secrets_dir / "serf-rpc"
    token.unlink()
    assert script.run(None if argv else "member-join", S1_LINE, *argv) == EXIT_ERROR
    assert script.log()[-1] == (
        f"error: cannot read the Serf RPC token: {token}: no such file;"
        " the last good configuration keeps serving"
    )
    assert script.agent.commands == [], "the agent was never asked"
    assert script.counter("errors") == 1
    assert script.state()["last_error"].endswith(f"{token}: no such file")
    assert script.live() is None


def test_a_malformed_rpc_token_is_refused_without_showing_it(script: Cluster) -> None:
    script.rpc_token("two words")
    assert script.event("member-join", S1) == EXIT_ERROR
    assert "the Serf RPC token in " in script.log()[-1]
    assert "malformed" in script.log()[-1]
    assert "two words" not in script.paths.event_log.read_text()
    assert script.agent.commands == []


def test_boot_needs_no_rpc_token(script: Cluster) -> None:
    (script.paths.secrets_dir / "serf-rpc").unlink()
    script.paths.secrets_dir.rmdir()
    script.paths.nodes_dir.mkdir()
    (script.paths.nodes_dir / "s1").write_text("s1 172.18.0.3 3000 port=3000,role=backend\n")
    assert script.run(None, "", "boot") == EXIT_OK
    assert servers(script.live()) == ["server s1 172.18.0.3:3000"]


def test_serf_answer_without_a_member_list_exits_1(cluster: Cluster, agent: FakeSerfAgent) -> None:
    agent.members = "<html>"  # type: ignore[assignment]
    assert cluster.event("member-join", S1) == EXIT_ERROR
    assert "members: no member list" in cluster.log()[-1]
    assert cluster.live() is None


def test_bad_settings_exit_1_naming_the_file(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    cluster.paths.settings.write_text("[1, 2]")
    assert cluster.event("member-join", S1) == EXIT_ERROR
    assert f"error: {cluster.paths.settings}: expected a JSON object, got list" in cluster.log()[-1]
    assert cluster.live() is None


def test_stdin_too_large_exits_1(script: Cluster) -> None:
    big = (S1_LINE + "\n") * (events.MAX_STDIN // len(S1_LINE) + 2)
    assert script.run("member-join", big) == EXIT_ERROR
    assert "event input larger than" in script.log()[-1]
    assert script.queries() == 0


# --- reloads through the master socket --------------------------------------


def test_reload_through_master_socket(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    master = FakeMaster("ok")
    with FakeSocket(cluster.paths.master_socket, master) as fake:
        assert cluster.event("member-join", S1) == EXIT_OK
    assert fake.commands[:2] == ["show proc", "reload"]
    assert re.fullmatch(
        r"config: reloaded in \d+ ms, live \d+ ms after the event \(1 servers: s1; worker 101\)",
        cluster.log()[-1],
    )
    state = cluster.state()
    assert state["reloads"] == 1
    assert state["last_servers"] == ["s1"]


def test_failed_reload_restores_previous_config(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    good = cluster.live()
    cluster.members(HA, S1, S2)
    with FakeSocket(cluster.paths.master_socket, FakeMaster("failed")):
        assert cluster.event("member-join", S2) == EXIT_ERROR
    assert cluster.live() == good
    assert cluster.log()[-1].startswith("error: reload failed: HAProxy refused the new config")


# --- render and boot commands -----------------------------------------------


def test_render_command_uses_live_membership(script: Cluster) -> None:
    script.members(HA, S2)
    assert script.run(None, "", "render") == EXIT_OK
    assert servers(script.live()) == ["server s2 172.18.0.4:3000"]
    assert script.queries() == 1


def test_boot_renders_from_recorded_nodes_without_serf(script: Cluster) -> None:
    cluster = script
    cluster.paths.nodes_dir.mkdir()
    (cluster.paths.nodes_dir / "s1").write_text("s1 172.18.0.3 3000 port=3000,role=backend\n")
    (cluster.paths.nodes_dir / "zz").write_text("broken\n")
    assert cluster.run(None, "", "boot") == EXIT_OK
    assert cluster.queries() == 0
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000"]
    log = cluster.log()
    assert log[0].startswith("refused: ") and "malformed node file line 'broken'" in log[0]
    assert log[-1] == "config: written (1 servers: s1)"


def test_boot_falls_back_to_bootstrap_config(script: Cluster) -> None:
    cluster = script
    cluster.paths.bootstrap_config.write_text("# bootstrap from Ansible\n")
    cluster.paths.settings.unlink()
    assert cluster.run(None, "", "boot") == EXIT_OK
    assert cluster.live() == "# bootstrap from Ansible\n"
    assert cluster.log()[-1] == (
        f"boot: {cluster.paths.settings}: settings file not found;"
        " starting from the bootstrap config"
    )


def test_boot_without_bootstrap_config_exits_1(script: Cluster) -> None:
    cluster = script
    cluster.paths.settings.unlink()
    assert cluster.run(None, "", "boot") == EXIT_ERROR
    assert cluster.log()[-1].startswith("error: [Errno 2]")


def test_bad_command_is_a_usage_error(script: Cluster) -> None:
    with pytest.raises(SystemExit) as exc:
        script.run("member-join", "", "explode")
    assert exc.value.code == 2


# --- pieces -----------------------------------------------------------------


def test_event_log_mirrors_to_console_and_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console = tmp_path / "console"
    log = EventLog(tmp_path / "deep" / "serf.log", str(console))
    log("hello")
    assert STAMP.match((tmp_path / "deep" / "serf.log").read_text())
    assert console.read_text() == "handler: hello\n"
    assert capsys.readouterr().err == "handler: hello\n"


def test_event_log_unwritable_still_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    EventLog(tmp_path / "file" / "serf.log")("message")
    err = capsys.readouterr().err
    assert "cannot write" in err
    assert "handler: message" in err


def test_update_state(tmp_path: Path) -> None:
    path = tmp_path / "run" / "state.json"
    update_state(path, events_inc=1, last_event="member-join")
    update_state(path, events_inc=2, refused_inc=1)
    assert json.loads(path.read_text()) == {"events": 3, "last_event": "member-join", "refused": 1}
    path.write_text("not json")
    update_state(path, errors_inc=1)
    assert json.loads(path.read_text()) == {"errors": 1}


# --- Runtime API fast path ---------------------------------------------------


S1_SERVER = {"s1": "172.18.0.3:3000"}
ADD_S2 = (
    "add server nodes/s2 172.18.0.4:3000 check inter 500ms fastinter 250ms downinter 500ms"
    " rise 1 fall 2"
)


def test_added_backend_goes_live_through_the_runtime_api_without_reload(
    cluster: Cluster,
) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    cluster.members(HA, S1, S2)
    master = FakeMaster("ok")
    with (
        FakeSocket(cluster.paths.admin_socket, FakeAdmin(S1_SERVER)) as admin,
        FakeSocket(cluster.paths.master_socket, master) as fake_master,
    ):
        assert cluster.event("member-join", S2) == EXIT_OK
    assert admin.commands[:4] == [
        "show stat",
        ADD_S2,
        "enable health nodes/s2",
        "enable server nodes/s2",
    ]
    # The service writes the file a moment later, and looks again then: nothing to change.
    assert set(admin.commands[4:]) <= {"show stat"}
    assert fake_master.commands == [], "no reload"
    assert any(
        re.fullmatch(r"runtime: added s2 without a reload, live \d+ ms after.*", line)
        for line in cluster.log()
    )
    # The file follows, so a later reload keeps s2.
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000", "server s2 172.18.0.4:3000"]
    assert set(cluster.nodes()) == {"s1", "s2"}
    assert cluster.state()["runtime_adds"] == 1


def test_departed_backend_leaves_through_the_runtime_api_without_reload(
    cluster: Cluster,
) -> None:
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1, S2) == EXIT_OK
    cluster.members(HA, S1)
    admin = FakeAdmin({**S1_SERVER, "s2": "172.18.0.4:3000"})
    with (
        FakeSocket(cluster.paths.admin_socket, admin) as sock,
        FakeSocket(cluster.paths.master_socket, FakeMaster("ok")) as fake_master,
    ):
        assert cluster.event("member-leave", S2) == EXIT_OK
    assert sock.commands[:3] == [
        "show stat",
        "set server nodes/s2 state maint",
        "del server nodes/s2",
    ]
    assert set(sock.commands[3:]) <= {"show stat"}
    assert fake_master.commands == [], "no reload"
    assert "runtime: removed s2 without a reload" in cluster.log()[-3]
    assert set(admin.servers) == {"s1"}
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000"]
    assert set(cluster.nodes()) == {"s1"}
    assert cluster.state()["runtime_removals"] == 1


def test_busy_server_is_deleted_later_and_revived_if_it_comes_back(
    cluster: Cluster,
) -> None:
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1, S2) == EXIT_OK
    agent = Agent(cluster.agent.addr, cluster.agent.auth)
    handler = Handler(cluster.paths, EventLog(cluster.paths.event_log), agent.members)
    s1, s2 = (
        Member(n, a, "backend", 3000) for n, a in (("s1", "172.18.0.3"), ("s2", "172.18.0.4"))
    )
    admin = FakeAdmin({**S1_SERVER, "s2": "172.18.0.4:3000"})
    admin.busy.add("s2")
    with FakeSocket(cluster.paths.admin_socket, admin):
        handler.apply([s1])
        assert admin.servers["s2"][1] == "MAINT", "no new request goes to s2"
        assert handler.pending.drained == {"s2"}, "deleted once its connections are gone"
        handler.apply([s1, s2])  # back before it was deleted: in rotation again
        assert admin.servers["s2"][1] == "UP"
        assert handler.pending.drained == set()
        handler.apply([s1])
        admin.busy.clear()
        handler.apply([s1])
    assert set(admin.servers) == {"s1"}
    assert handler.pending.drained == set()


def test_refused_runtime_command_falls_back_to_a_reload(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    cluster.members(HA, S1, S2)
    master = FakeMaster("ok")
    admin = FakeAdmin(S1_SERVER)
    admin.refuse = "add server"
    with (
        FakeSocket(cluster.paths.admin_socket, admin),
        FakeSocket(cluster.paths.master_socket, master) as fake_master,
    ):
        assert cluster.event("member-join", S2) == EXIT_OK
    assert "reload" in fake_master.commands
    assert any(line.startswith("runtime: 'add server nodes/s2") for line in cluster.log())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sticky_sessions": True}, "add server refuses cookie"),
        ({}, "address changed"),
    ],
)
def test_changes_the_runtime_api_cannot_make_reload(
    cluster: Cluster, change: dict[str, Any], reason: str
) -> None:
    cluster.paths.settings.write_text(json.dumps({**SETTINGS, **change}))
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    cluster.members(HA, S1, S2)
    running = {"s1": "172.18.0.99:3000"} if reason == "address changed" else S1_SERVER
    with (
        FakeSocket(cluster.paths.admin_socket, FakeAdmin(running)) as admin,
        FakeSocket(cluster.paths.master_socket, FakeMaster("ok")) as fake_master,
    ):
        assert cluster.event("member-join", S2) == EXIT_OK
    assert not any(c.startswith(("add", "set", "del")) for c in admin.commands), reason
    assert fake_master.commands.count("reload") == 1, reason


def test_render_command_always_reloads(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    with (
        FakeSocket(cluster.paths.admin_socket, FakeAdmin(S1_SERVER)) as admin,
        FakeSocket(cluster.paths.master_socket, FakeMaster("ok")) as fake_master,
    ):
        cluster.paths.settings.write_text(json.dumps({**SETTINGS, "retries": 5}))
        assert cluster.run(None, "", "render") == EXIT_OK
    assert admin.commands == [], "`render` (a settings change) never uses the Runtime API"
    assert fake_master.commands.count("reload") == 1


def test_a_settings_change_found_by_reconciling_is_reloaded(cluster: Cluster) -> None:
    """The service may render new settings before `render` runs: it reloads them itself,
    and `render` then finds the file unchanged (one reload, not none)."""
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    with (
        FakeSocket(cluster.paths.admin_socket, FakeAdmin(S1_SERVER)) as admin,
        FakeSocket(cluster.paths.master_socket, FakeMaster("ok")) as fake_master,
    ):
        cluster.paths.settings.write_text(json.dumps({**SETTINGS, "retries": 5}))
        assert cluster.run(None, "", "reconcile") == EXIT_OK
        assert fake_master.commands.count("reload") == 1
        assert "    retries 5\n" in (cluster.live() or "")
        assert cluster.run(None, "", "render") == EXIT_OK
        assert fake_master.commands.count("reload") == 1, "unchanged: not reloaded again"
        # Servers alone still change through the Runtime API, without a reload.
        cluster.members(HA, S1, S2)
        assert cluster.run(None, "", "reconcile") == EXIT_OK
    assert fake_master.commands.count("reload") == 1
    assert ADD_S2 in admin.commands
    assert any(
        line.startswith("config: reloaded in ") and "for new settings" in line
        for line in cluster.log()
    )


def test_template_error_keeps_the_last_good_config(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    before = cluster.live()
    broken = {k: v for k, v in SETTINGS.items() if k != "retries"}
    cluster.paths.settings.write_text(json.dumps(broken))
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S2) == EXIT_ERROR
    assert cluster.live() == before
    assert set(cluster.nodes()) == {"s1"}
    last = cluster.log()[-1]
    assert "UndefinedError" in last and "retries" in last
    assert last.endswith("the last good configuration keeps serving")


def test_reconcile_applies_a_missed_leave_and_is_quiet_otherwise(cluster: Cluster) -> None:
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S1, S2) == EXIT_OK
    lines = len(cluster.log())
    assert cluster.run(None, "", "reconcile") == EXIT_OK
    assert len(cluster.log()) == lines, "nothing changed: nothing logged"
    # s2 left, but Serf suppressed the event: the next reconcile removes it.
    cluster.members(HA, S1)
    assert cluster.run(None, "", "reconcile") == EXIT_OK
    assert set(cluster.nodes()) == {"s1"}
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000"]


# --- the service's own input: the RPC stream -----------------------------------


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ({"Event": 7}, "event '7' from the Serf stream: not a Serf event"),
        ({"Event": "member-join\nx"}, "event 'member-join\\nx' from the Serf stream"),
        ({"Event": "member-join", "Members": {"s1": 1}}, "member-join event without a member"),
        ({"Event": "member-join", "Members": [7, {"Name": "s1"}]}, "member entry is not a map"),
    ],
)
def test_malformed_stream_messages_are_refused_and_the_next_event_applies(
    service: Cluster, body: dict[str, Any], refused: str
) -> None:
    service.members(HA, S1)
    daemon, stream = service.service()
    service.agent.push(body)
    assert daemon.step(stream)
    assert any(line.startswith("refused: ") and refused in line for line in service.log())
    assert service.counter("refused") >= 1
    assert service.event("member-join", S1) == EXIT_OK
    assert servers(service.live()) == ["server s1 172.18.0.3:3000"]


def test_hostile_members_in_a_streamed_event_are_refused_the_rest_applies(
    service: Cluster,
) -> None:
    evil = serf_member("evil\nserver x 6.6.6.6:80", "172.18.0.7")
    service.members(HA, S1, S2, evil)
    assert service.event("member-join", S1, evil, S2) == EXIT_OK
    log = service.log()
    assert log[:2] == [
        "member-join: s1 172.18.0.3 port=3000 role=backend",
        "member-join: s2 172.18.0.4 port=3000 role=backend",
    ]
    assert sum("invalid member name 'evil\\nserver x 6.6.6.6:80'" in line for line in log) == 2
    assert "6.6.6.6" not in (service.live() or "")
    assert sorted(service.nodes()) == ["s1", "s2"]


def test_the_service_reads_the_membership_over_one_connection(service: Cluster) -> None:
    service.members(HA, S1)
    for _ in range(3):
        assert service.event("member-update", S1) == EXIT_OK
    assert service.queries() == 3
    assert service.agent.commands.count("handshake") == 2, "the stream and one query connection"


def test_a_failed_step_leaves_the_service_running(service: Cluster) -> None:
    service.members(HA, S1)
    assert service.event("member-join", S1) == EXIT_OK
    good = service.live()
    service.members(HA, S1, S2)
    service.haproxy_fails("[ALERT] bad\n")
    assert service.event("member-join", S2) == EXIT_ERROR
    assert service.live() == good
    (service.bin / "haproxy.fail").unlink()
    assert service.event("member-join", S2) == EXIT_OK
    assert set(service.nodes()) == {"s1", "s2"}


def test_a_rejected_rendering_is_logged_once_while_it_stands(service: Cluster) -> None:
    service.members(HA, S1)
    assert service.event("member-join", S1) == EXIT_OK
    good = service.live()
    service.members(HA, S1, S2)
    service.haproxy_fails("[ALERT] bad\n")
    assert service.event("member-join", S2) == EXIT_ERROR
    logged = len(service.log())
    daemon, _ = service.service()
    for _ in range(3):  # the service reconciles every few seconds
        daemon.guarded(daemon.handler.reconcile)
    assert len(service.log()) == logged
    assert service.counter("errors") == 1
    assert service.live() == good
    (service.bin / "haproxy.fail").unlink()
    daemon.guarded(daemon.handler.reconcile)
    assert servers(service.live()) == ["server s1 172.18.0.3:3000", "server s2 172.18.0.4:3000"]
    assert set(service.nodes()) == {"s1", "s2"}


def test_an_agent_alone_is_logged_once_until_a_step_succeeds(service: Cluster) -> None:
    """A new balancer's agent knows only itself until the backends join it."""
    service.members(HA, S1)
    assert service.event("member-join", S1) == EXIT_OK
    service.members(HA)
    daemon, _ = service.service()
    logged = len(service.log())
    for _ in range(4):
        daemon.guarded(daemon.handler.reconcile)
    assert [line for line in service.log()[logged:] if "knows no other member" in line] == [
        "error: the local agent knows no other member yet; keeping the last configuration"
        " (1 backends); the last good configuration keeps serving"
    ]
    assert service.counter("errors") == 1
    service.members(HA, S1)
    daemon.guarded(daemon.handler.reconcile)  # a success: the next failure is news again
    service.members(HA)
    daemon.guarded(daemon.handler.reconcile)
    assert service.counter("errors") == 2


def test_a_different_failure_is_logged_although_one_stands(service: Cluster) -> None:
    service.members(HA, S1)
    assert service.event("member-join", S1) == EXIT_OK
    daemon, _ = service.service()
    service.members(HA)
    daemon.guarded(daemon.handler.reconcile)
    service.members(HA, S1, S2)
    service.haproxy_fails("[ALERT] bad\n")
    daemon.guarded(daemon.handler.reconcile)
    assert service.counter("errors") == 2
    assert "haproxy -c rejected" in service.log()[-1]


# --- only addresses the cluster owns become servers ------------------------------


def test_members_outside_the_cluster_are_refused_and_the_rest_applies(cluster: Cluster) -> None:
    hostile = [
        serf_member("s9spoof", "127.0.0.1", port="80"),  # loopback: HAProxy itself
        serf_member("s8", "169.254.1.1"),  # link-local
        serf_member("s7", "10.66.0.7"),  # a host outside the cluster's networks
        serf_member("s6", "fe80::6"),
        serf_member("s1", "127.0.0.1"),  # a real backend's name, a hostile address
    ]
    cluster.members(HA, S1, S2, *hostile)
    assert cluster.event("member-join", S1, S2, *hostile) == EXIT_OK
    assert servers(cluster.live()) == ["server s1 172.18.0.3:3000", "server s2 172.18.0.4:3000"]
    assert sorted(cluster.nodes()) == ["s1", "s2"]
    refused = [line for line in cluster.log() if line.startswith("refused: ")]
    for reason in (
        "member s9spoof: address 127.0.0.1 is a loopback address",
        "member s8: address 169.254.1.1 is a link-local address",
        "member s7: address 10.66.0.7 is outside the cluster's networks (172.18.0.0/16, fd00::/8)",
        "member s6: address fe80::6 is a link-local address",
        "member s1: address 127.0.0.1 is a loopback address",
    ):
        assert f"refused: {reason}" in refused
    assert cluster.counter("refused") == len(hostile)


def test_the_balancers_own_address_is_refused(script: Cluster) -> None:
    own = serf_member("s5", "172.18.0.2")  # ha's address
    script.members(HA, S1, own)
    log = EventLog(script.paths.event_log)
    agent = Agent(script.agent.addr, script.agent.auth)
    handler = Handler(script.paths, log, agent.members, frozenset({"172.18.0.2"}))
    handler.apply(handler.membership(), mode="boot")
    assert servers(script.live()) == ["server s1 172.18.0.3:3000"]
    assert "refused: member s5: address 172.18.0.2 is the balancer's own address" in script.log()


def test_a_malformed_network_in_the_settings_keeps_the_last_config(cluster: Cluster) -> None:
    cluster.members(HA, S1)
    assert cluster.event("member-join", S1) == EXIT_OK
    good = cluster.live()
    cluster.paths.settings.write_text(json.dumps({**SETTINGS, "backend_networks": ["10.0.0/33"]}))
    cluster.members(HA, S1, S2)
    assert cluster.event("member-join", S2) == EXIT_ERROR
    assert cluster.live() == good
    assert "backend_networks: '10.0.0/33' is not a network (CIDR)" in cluster.log()[-1]


def test_forget_forces_the_leave_of_members_removed_on_purpose(cluster: Cluster) -> None:
    cluster.members(
        serf_member("ha", "10.0.0.9", role="balancer", port=None),
        serf_member("s1", "10.0.0.1"),
        serf_member("s2", "10.0.0.2", status="failed"),
        serf_member("s3", "10.0.0.3"),
        serf_member("s4", "10.0.0.4", status="left"),
    )
    assert cluster.run(None, "", "forget", "s2", "s3", "s4", "s9") == EXIT_OK
    status = {m["Name"]: m["Status"] for m in cluster.agent.members}
    assert status == {"ha": "alive", "s1": "alive", "s2": "left", "s3": "left", "s4": "left"}
    assert cluster.agent.commands.count("force-leave") == 2
    assert cluster.log()[-4:] == [
        "forget: s2 was failed; Serf now records that it left",
        "forget: s3 was alive; Serf now records that it left",
        "forget: s4 is left to Serf already",
        "forget: s9 is unknown to Serf already",
    ]


def test_forget_refuses_a_bad_name_before_telling_serf_anything(cluster: Cluster) -> None:
    cluster.members(serf_member("s2", "10.0.0.2", status="failed"))
    assert cluster.run(None, "", "forget", "s2", "bad name") == EXIT_ERROR
    assert "force-leave" not in cluster.agent.commands
    assert cluster.log()[-1].startswith("error: forget: invalid member name 'bad name'")


# --- ready: the balancer role's handover waits for it ---------------------------


def test_ready_waits_for_a_server_of_nodes_up(
    script: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    script.members(HA, S1)
    assert script.event("member-join", S1) == EXIT_OK
    statuses = ["DOWN"]

    def master(command: str) -> str:
        if command == "@1 show stat":
            return f"# pxname,svname,status\nnodes,s1,{statuses[0]}\n"
        return FakeMaster()(command)

    with FakeSocket(script.paths.master_socket, master):
        assert script.run(None, "", "ready", "--timeout", "0.3") == EXIT_ERROR
        assert "no server of nodes is UP yet (1 configured)" in capsys.readouterr().err
        statuses[0] = "UP"
        assert script.run(None, "", "ready", "--timeout", "5") == EXIT_OK
        assert "(1 backends in /nodes)" in capsys.readouterr().out


def test_an_agent_alone_joins_the_recorded_backends_a_few_at_a_time(
    service: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new balancer container's agent: the backends do not retry a balancer that
    left, so it joins them, from /nodes."""
    members = [rpc_member(f"s{i}", f"172.18.0.{i + 2}") for i in range(1, 6)]
    service.members(HA, *members)
    assert service.event("member-join", *members) == EXIT_OK
    service.members(HA)
    asked: list[list[str]] = []
    answers = [0, 2]
    clock = [100.0]
    monkeypatch.setattr(handler_module.time, "monotonic", lambda: clock[0])

    def join(addresses: list[str]) -> int:
        asked.append(addresses)
        return answers.pop(0)

    log = EventLog(service.paths.event_log)
    alone = Handler(service.paths, log, Agent(service.agent.addr, "token").members, join=join)
    with pytest.raises(HandlerError, match="knows no other member yet"):
        alone.reconcile()
    assert asked == [["172.18.0.3:7946", "172.18.0.4:7946", "172.18.0.5:7946"]]
    # None answered: the next ones are asked only after the back-off.
    clock[0] += REJOIN_BACKOFF_S - 1
    with pytest.raises(HandlerError):
        alone.reconcile()
    assert len(asked) == 1
    clock[0] += 1
    with pytest.raises(HandlerError):
        alone.reconcile()
    assert asked[1] == ["172.18.0.6:7946", "172.18.0.7:7946", "172.18.0.3:7946"]
    assert service.log()[-2:] == [
        "serf: the agent knows no other member: joined 0 of s1, s2, s3",
        "serf: the agent knows no other member: joined 2 of s4, s5, s1",
    ]
    service.members(HA, *members)  # the join brought the membership
    alone.reconcile()
    assert set(service.nodes()) == {m["Name"] for m in members}
