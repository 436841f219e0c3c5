"""lbcluster.haproxy: validate, install, restore, reload, read stats."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fakesock import SHOW_PROC_26, FakeMaster, FakeSocket

from lbcluster import haproxy
from lbcluster.haproxy import (
    ConfigInvalid,
    ProcInfo,
    ReloadFailed,
    check_config,
    install_config,
    parse_show_proc,
    parse_stat_csv,
    restore_config,
    server_states,
    socket_command,
)

# --- show proc --------------------------------------------------------------

SHOW_PROC_REAL = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
1               master          0 [failed: 0]   0d00h00m05s     2.6.12
# workers
8               worker          0               0d00h00m05s     2.6.12
# old workers
# programs

"""

SHOW_PROC_AFTER_RELOADS = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
1               master          3 [failed: 1]   0d00h12m41s     2.6.12
# workers
31              worker          0               0d00h00m02s     2.6.12
# old workers
24              worker          1               0d00h00m40s     2.6.12
17              worker          2               0d00h05m10s     2.6.12
# programs
40              program         0               0d00h12m41s     -
"""


def test_parse_show_proc_fresh_master() -> None:
    assert parse_show_proc(SHOW_PROC_REAL) == ProcInfo(reloads=0, failed=0, workers=(8,))


def test_parse_show_proc_ignores_old_workers_and_programs() -> None:
    info = parse_show_proc(SHOW_PROC_AFTER_RELOADS)
    assert info == ProcInfo(reloads=3, failed=1, workers=(31,))


def test_parse_show_proc_without_failed_counter() -> None:
    # Older masters print only the reload counter.
    text = (
        "#<PID> <type> <reloads> <uptime> <version>\n"
        "1 master 7 0d00h00m01s 2.4.0\n"
        "# workers\n"
        "9 worker 0 0d 2.4.0\n"
    )
    assert parse_show_proc(text) == ProcInfo(reloads=7, failed=0, workers=(9,))


def test_parse_show_proc_several_current_workers() -> None:
    text = SHOW_PROC_REAL.replace(
        "# old workers", "9               worker          0   0d00h00m05s 2.6.12\n# old workers"
    )
    assert parse_show_proc(text).workers == (8, 9)


def test_parse_show_proc_garbage() -> None:
    assert parse_show_proc("") == ProcInfo(reloads=0, failed=0, workers=())
    assert parse_show_proc("Unknown command\n") == ProcInfo(0, 0, ())


def test_fake_master_output_parses() -> None:
    text = SHOW_PROC_26.format(reloads=2, failed=0, worker=12, old=11)
    assert parse_show_proc(text) == ProcInfo(2, 0, (12,))


# --- show stat --------------------------------------------------------------

# The header line of `show stat` in HAProxy 2.6 (note the trailing comma).
STAT_HEADER_LINE = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
    "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,"
    "sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,"
    "check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,"
    "req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
    "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,"
    "agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,"
    "intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,"
    "qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,srid,sess_other,h1sess,h2sess,h3sess,req_other,h1req,h2req,h3req,"
    "proto,"
)
STAT_HEADER = STAT_HEADER_LINE[2:].rstrip(",").split(",")


def csv_field(value: str) -> str:
    """HAProxy's csv_enc(): quote fields holding a comma or a quote, doubling quotes."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def stat_row(**values: str) -> str:
    return ",".join(csv_field(values.get(col, "")) for col in STAT_HEADER) + ","


SHOW_STAT = (
    STAT_HEADER_LINE
    + "\n"
    + "\n".join(
        [
            stat_row(pxname="http", svname="FRONTEND", scur="1", stot="42", status="OPEN"),
            stat_row(
                pxname="nodes",
                svname="s1",
                scur="2",
                stot="120",
                status="UP",
                lastchg="35",
                check_status="L7OK",
                check_desc="Layer7 check passed",
                addr="172.18.0.3:3000",
            ),
            stat_row(
                pxname="nodes",
                svname="s2",
                scur="0",
                stot="3",
                status="DOWN",
                lastchg="4",
                check_status="L4CON",
                check_desc='Layer4 connection problem, info: "Connection refused"',
                addr="[fd00::2]:3000",
            ),
            stat_row(pxname="nodes", svname="s3", status="MAINT", lastchg="1"),
            stat_row(pxname="nodes", svname="BACKEND", scur="2", stot="123", status="UP"),
            stat_row(pxname="stats", svname="FRONTEND", status="OPEN"),
            stat_row(pxname="stats", svname="BACKEND", status="UP"),
        ]
    )
    + "\n\n"
)


def test_parse_stat_csv_realistic() -> None:
    rows = parse_stat_csv(SHOW_STAT)
    assert [(r["pxname"], r["svname"]) for r in rows] == [
        ("http", "FRONTEND"),
        ("nodes", "s1"),
        ("nodes", "s2"),
        ("nodes", "s3"),
        ("nodes", "BACKEND"),
        ("stats", "FRONTEND"),
        ("stats", "BACKEND"),
    ]
    s1, s2 = rows[1], rows[2]
    assert (s1["status"], s1["scur"], s1["stot"], s1["lastchg"]) == ("UP", "2", "120", "35")
    assert s1["check_status"] == "L7OK"
    assert s1["addr"] == "172.18.0.3:3000"
    assert s2["check_desc"] == 'Layer4 connection problem, info: "Connection refused"'
    assert s2["addr"] == "[fd00::2]:3000"


def test_parse_stat_csv_leading_whitespace_and_empty() -> None:
    assert parse_stat_csv("\n  " + SHOW_STAT)[1]["svname"] == "s1"
    assert parse_stat_csv("") == []
    assert parse_stat_csv("# pxname,svname\n") == []


# --- sockets ----------------------------------------------------------------


def test_socket_command_and_server_states(short_tmp: Path) -> None:
    sock = short_tmp / "admin.sock"
    with FakeSocket(sock, lambda cmd: SHOW_STAT if cmd == "show stat" else "?\n") as fake:
        assert socket_command(sock, "help") == "?\n"
        rows = server_states(sock, "nodes")
        assert fake.commands == ["help", "show stat"]
    assert [r["svname"] for r in rows] == ["s1", "s2", "s3"]
    assert [r["status"] for r in rows] == ["UP", "DOWN", "MAINT"]


def test_server_states_other_backend(short_tmp: Path) -> None:
    sock = short_tmp / "admin.sock"
    with FakeSocket(sock, lambda cmd: SHOW_STAT):
        assert server_states(sock, "stats") == []
        assert server_states(sock, "absent") == []


def test_socket_command_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        socket_command(tmp_path / "none.sock", "show proc")


def test_reload_confirmed_by_new_worker(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    master = FakeMaster("ok")
    with FakeSocket(sock, master) as fake:
        info = haproxy.reload(sock, timeout=5)
    assert info == ProcInfo(reloads=1, failed=0, workers=(101,))
    assert fake.commands[:2] == ["show proc", "reload"]


def test_reload_failure_counter_raises(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    with FakeSocket(sock, FakeMaster("failed")), pytest.raises(ReloadFailed, match="refused"):
        haproxy.reload(sock, timeout=5)


def test_reload_without_confirmation_times_out(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    with (
        FakeSocket(sock, FakeMaster("stuck")),
        pytest.raises(ReloadFailed, match="did not confirm the reload within 0s"),
    ):
        haproxy.reload(sock, timeout=0.2)


# --- check_config / install_config / restore_config -------------------------


def test_check_config_passes_arguments(tmp_path: Path, fake_haproxy: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n")
    check_config(cfg, str(fake_haproxy))
    calls = (fake_haproxy.parent / "haproxy.calls").read_text()
    assert calls == f"-c -q -f {cfg}\n"


def test_check_config_failure_carries_diagnostics(tmp_path: Path, fake_haproxy: Path) -> None:
    (fake_haproxy.parent / "haproxy.fail").write_text(
        "[NOTICE]   (1) : haproxy version is 2.6.12\n"
        "[ALERT]    (1) : config : parsing [x.cfg:12] : unknown keyword 'sevrer' in 'backend'\n"
        "\n"
        "[ALERT]    (1) : config : Fatal errors found in configuration.\n"
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n")
    with pytest.raises(ConfigInvalid) as exc:
        check_config(cfg, str(fake_haproxy))
    assert str(exc.value) == (
        f"haproxy -c rejected {cfg}: [NOTICE]   (1) : haproxy version is 2.6.12 | "
        "[ALERT]    (1) : config : parsing [x.cfg:12] : unknown keyword 'sevrer' in 'backend' | "
        "[ALERT]    (1) : config : Fatal errors found in configuration."
    )


def test_check_config_failure_without_output(tmp_path: Path, fake_haproxy: Path) -> None:
    (fake_haproxy.parent / "haproxy.fail").write_text("")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("")
    with pytest.raises(ConfigInvalid, match="no diagnostics"):
        check_config(cfg, str(fake_haproxy))


def test_install_new_config(tmp_path: Path, fake_haproxy: Path) -> None:
    live = tmp_path / "etc" / "haproxy" / "haproxy.cfg"
    assert install_config("global\n", live, str(fake_haproxy)) == ""
    assert live.read_text() == "global\n"
    # haproxy checked the candidate next to the live file, not the live file itself.
    calls = (fake_haproxy.parent / "haproxy.calls").read_text()
    assert calls == f"-c -q -f {live.with_name('.haproxy.cfg.new')}\n"
    assert (fake_haproxy.parent / "haproxy.checked").read_text() == "global\n"
    assert sorted(p.name for p in live.parent.iterdir()) == ["haproxy.cfg"]


def test_install_changed_config_returns_previous(tmp_path: Path, fake_haproxy: Path) -> None:
    live = tmp_path / "haproxy.cfg"
    live.write_text("old\n")
    assert install_config("new\n", live, str(fake_haproxy)) == "old\n"
    assert live.read_text() == "new\n"
    assert not live.with_name(".haproxy.cfg.new").exists()


def test_install_unchanged_touches_nothing(tmp_path: Path, fake_haproxy: Path) -> None:
    live = tmp_path / "haproxy.cfg"
    live.write_text("same\n")
    os.utime(live, (1_000_000_000, 1_000_000_000))
    inode = live.stat().st_ino
    assert install_config("same\n", live, str(fake_haproxy)) is None
    assert live.stat().st_mtime == 1_000_000_000
    assert live.stat().st_ino == inode
    assert not (fake_haproxy.parent / "haproxy.calls").exists()  # not even validated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "haproxy.cfg"]


def test_install_invalid_leaves_live_intact(tmp_path: Path, fake_haproxy: Path) -> None:
    (fake_haproxy.parent / "haproxy.fail").write_text(
        "[ALERT]    (7) : config : parsing [.haproxy.cfg.new:3]: unknown keyword 'bogus'\n"
    )
    live = tmp_path / "haproxy.cfg"
    live.write_text("good\n")
    inode = live.stat().st_ino
    with pytest.raises(ConfigInvalid) as exc:
        install_config("bogus\n", live, str(fake_haproxy))
    assert "unknown keyword 'bogus'" in str(exc.value)
    assert str(live.with_name(".haproxy.cfg.new")) in str(exc.value)
    assert live.read_text() == "good\n"
    assert live.stat().st_ino == inode
    assert not live.with_name(".haproxy.cfg.new").exists()
    assert (fake_haproxy.parent / "haproxy.checked").read_text() == "bogus\n"


def test_install_invalid_with_no_live_file(tmp_path: Path, fake_haproxy: Path) -> None:
    (fake_haproxy.parent / "haproxy.fail").write_text("[ALERT] no\n")
    live = tmp_path / "haproxy.cfg"
    with pytest.raises(ConfigInvalid):
        install_config("bogus\n", live, str(fake_haproxy))
    assert not live.exists()
    assert not live.with_name(".haproxy.cfg.new").exists()


def test_install_without_haproxy_binary(tmp_path: Path) -> None:
    live = tmp_path / "haproxy.cfg"
    live.write_text("good\n")
    with pytest.raises(OSError):
        install_config("new\n", live, str(tmp_path / "no-such-haproxy"))
    assert live.read_text() == "good\n"
    assert not live.with_name(".haproxy.cfg.new").exists()


def test_restore_config(tmp_path: Path) -> None:
    live = tmp_path / "haproxy.cfg"
    live.write_text("new, refused by the running HAProxy\n")
    restore_config("old\n", live)
    assert live.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg"]


def test_restore_config_nothing_to_restore(tmp_path: Path) -> None:
    live = tmp_path / "haproxy.cfg"
    live.write_text("current\n")
    restore_config("", live)
    assert live.read_text() == "current\n"


def test_differs_beyond_servers() -> None:
    base = "backend nodes\n    default-server check\n    server s1 10.0.0.1:3000\n"
    more = base + "    server s2 10.0.0.2:3000\n"
    assert not haproxy.differs_beyond_servers(base, more)
    assert not haproxy.differs_beyond_servers(more, base)
    assert haproxy.differs_beyond_servers(base, base.replace("check", "check inter 1s"))
    assert haproxy.differs_beyond_servers(base, "# new\n" + more)


# --- a new balancer serving (the handover waits for it) ----------------------

STAT_HEADER = "# pxname,svname,status,check_status\n"


def master_with_servers(statuses: list[str], worker: bool = True) -> Callable[[str], str]:
    master = FakeMaster()

    def respond(command: str) -> str:
        if command == "show proc":
            text = master(command)
            lines = text.splitlines(keepends=True)
            return "".join(line for line in lines if worker or not line.startswith("100 "))
        if command == "@1 show stat":
            rows = [f"nodes,s{i},{s},L7OK" for i, s in enumerate(statuses, 1)]
            return STAT_HEADER + "\n".join(["nodes,FRONTEND,OPEN,", *rows, "nodes,BACKEND,UP,"])
        return ""

    return respond


def test_serving_once_a_worker_runs_and_a_server_is_up(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    with FakeSocket(sock, master_with_servers(["DOWN", "UP"])):
        assert haproxy.serving(sock, "nodes", expect_servers=True) is None


def test_not_serving_while_no_server_is_up(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    with FakeSocket(sock, master_with_servers(["DOWN", "MAINT"])):
        assert haproxy.serving(sock, "nodes", expect_servers=True) == (
            "no server of nodes is UP yet (2 configured)"
        )
        assert haproxy.serving(sock, "nodes", expect_servers=False) is None


def test_not_serving_without_a_worker_or_a_master(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    assert "does not answer" in str(haproxy.serving(sock, "nodes", expect_servers=False))
    with FakeSocket(sock, master_with_servers(["UP"], worker=False)):
        assert haproxy.serving(sock, "nodes", expect_servers=True) == "HAProxy has no worker yet"


def test_wait_serving_names_what_is_lacking(short_tmp: Path) -> None:
    sock = short_tmp / "master.sock"
    with (
        FakeSocket(sock, master_with_servers(["DOWN"])),
        pytest.raises(haproxy.NotServing, match=r"not serving after 0 s: no server of nodes"),
    ):
        haproxy.wait_serving(sock, "nodes", expect_servers=True, timeout=0.3)
