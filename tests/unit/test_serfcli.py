"""lbcluster.serfcli: `serf members -format=json` through a fake serf executable."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_executable, members_json, serf_member

from lbcluster.serfcli import SerfUnavailable, live_members


def test_live_members(fake_serf: Path) -> None:
    (fake_serf.parent / "members.json").write_text(
        members_json(
            serf_member("ha", "172.18.0.2:7946", role="balancer", port=None),
            serf_member("s1", "[fd00::3]:7946"),
            serf_member("bad name", "172.18.0.4:7946"),
        )
    )
    result = live_members(str(fake_serf), "127.0.0.1:7474")
    assert [(m.name, m.address) for m in result.members] == [
        ("ha", "172.18.0.2"),
        ("s1", "fd00::3"),
    ]
    assert len(result.refused) == 1
    calls = (fake_serf.parent / "serf.calls").read_text()
    assert calls == "members -format=json -rpc-addr=127.0.0.1:7474\n"


def test_serf_error_exit(fake_serf: Path) -> None:
    (fake_serf.parent / "serf.fail").write_text("Error connecting to Serf agent\n")
    with pytest.raises(SerfUnavailable, match="serf members exited 1: Error connecting"):
        live_members(str(fake_serf))


def test_serf_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(SerfUnavailable, match="serf members failed: "):
        live_members(str(tmp_path / "no-serf"))


def test_serf_unreadable_output(fake_serf: Path) -> None:
    (fake_serf.parent / "members.json").write_text("Members:\n  ha alive\n")
    with pytest.raises(SerfUnavailable, match="unreadable 'serf members' output"):
        live_members(str(fake_serf))


def test_serf_exit_without_stderr_shows_stdout(tmp_path: Path) -> None:
    serf = make_executable(tmp_path / "serf", "#!/bin/sh\necho 'on stdout'\nexit 3\n")
    with pytest.raises(SerfUnavailable, match="serf members exited 3: on stdout"):
        live_members(str(serf))
