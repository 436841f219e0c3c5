"""lbcluster.nodes: the /nodes directory, one file per alive backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lbcluster.members import InvalidMember, Member, make_member
from lbcluster.nodes import node_line, parse_node_line, read_nodes, sync_nodes


def backend(name: str, address: str, port: int = 3000, **extra: str) -> Member:
    return make_member(name, address, {"role": "backend", "port": str(port), **extra})


def listing(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def test_node_line_format() -> None:
    member = backend("s1", "172.18.0.3", zone="a")
    assert node_line(member) == "s1 172.18.0.3 3000 port=3000,role=backend,zone=a\n"


def test_parse_node_line_round_trip() -> None:
    member = backend("s6", "fd00::6", 8080, zone="b")
    parsed = parse_node_line(node_line(member))
    assert parsed == member
    assert dict(parsed.tags) == dict(member.tags)


@pytest.mark.parametrize(
    "text", ["", "s1", "s1 10.0.0.1 3000", "s1 10.0.0.1 3000 role=backend,port=3000 extra"]
)
def test_parse_node_line_malformed(text: str) -> None:
    with pytest.raises(InvalidMember, match="malformed node file line"):
        parse_node_line(text)


def test_parse_node_line_port_comes_from_tags() -> None:
    # The third column is informative; the tags are the truth.
    assert parse_node_line("s1 10.0.0.1 1 role=backend,port=3000\n").port == 3000


def test_sync_creates_directory_and_adds(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    result = sync_nodes(nodes, [backend("s2", "10.0.0.2"), backend("s1", "10.0.0.1")])
    assert result.added == ["s1", "s2"]
    assert result.updated == result.removed == []
    assert result.changed
    assert listing(nodes) == {
        "s1": "s1 10.0.0.1 3000 port=3000,role=backend\n",
        "s2": "s2 10.0.0.2 3000 port=3000,role=backend\n",
    }


def test_sync_touches_only_what_differs(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    sync_nodes(nodes, [backend("s1", "10.0.0.1"), backend("s2", "10.0.0.2")])
    old = 1_000_000_000
    for path in nodes.iterdir():
        os.utime(path, (old, old))
    s1_inode = (nodes / "s1").stat().st_ino

    result = sync_nodes(
        nodes, [backend("s1", "10.0.0.1"), backend("s2", "10.0.0.9"), backend("s3", "10.0.0.3")]
    )
    assert (result.added, result.updated, result.removed) == (["s3"], ["s2"], [])
    assert (nodes / "s1").stat().st_mtime == old  # untouched
    assert (nodes / "s1").stat().st_ino == s1_inode
    assert (nodes / "s2").read_text() == "s2 10.0.0.9 3000 port=3000,role=backend\n"

    result = sync_nodes(nodes, [backend("s3", "10.0.0.3")])
    assert (result.added, result.updated, sorted(result.removed)) == ([], [], ["s1", "s2"])
    assert sorted(listing(nodes)) == ["s3"]


def test_sync_unchanged_reports_nothing(tmp_path: Path) -> None:
    members = [backend("s1", "10.0.0.1")]
    sync_nodes(tmp_path, members)
    result = sync_nodes(tmp_path, members)
    assert not result.changed
    assert (result.added, result.updated, result.removed) == ([], [], [])


def test_sync_empty_removes_everything(tmp_path: Path) -> None:
    sync_nodes(tmp_path, [backend("s1", "10.0.0.1"), backend("s2", "10.0.0.2")])
    result = sync_nodes(tmp_path, [])
    assert sorted(result.removed) == ["s1", "s2"]
    assert list(tmp_path.iterdir()) == []


def test_sync_ignores_dotfiles_and_directories(tmp_path: Path) -> None:
    (tmp_path / ".keep").write_text("mine")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "subdir").mkdir()
    result = sync_nodes(tmp_path, [backend("s1", "10.0.0.1")])
    assert result.removed == []
    assert (tmp_path / ".keep").read_text() == "mine"
    assert (tmp_path / ".hidden").exists()
    assert (tmp_path / "subdir").is_dir()


def test_sync_cleans_leftover_temporary_files(tmp_path: Path) -> None:
    (tmp_path / ".s1.tmp").write_text("half-written")
    result = sync_nodes(tmp_path, [backend("s1", "10.0.0.1")])
    assert result.removed == []  # not reported: never a node
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1"]


def test_sync_repairs_a_file_edited_by_hand(tmp_path: Path) -> None:
    sync_nodes(tmp_path, [backend("s1", "10.0.0.1")])
    (tmp_path / "s1").write_text("garbage")
    result = sync_nodes(tmp_path, [backend("s1", "10.0.0.1")])
    assert result.updated == ["s1"]
    assert (tmp_path / "s1").read_text() == "s1 10.0.0.1 3000 port=3000,role=backend\n"


def test_read_nodes_round_trip(tmp_path: Path) -> None:
    members = [
        backend("s2", "10.0.0.2", 81),
        backend("s1", "fd00::1"),
        backend("a.b_c-d", "1.2.3.4"),
    ]
    sync_nodes(tmp_path, members)
    recorded, problems = read_nodes(tmp_path)
    assert problems == []
    assert recorded == sorted(members)
    assert [dict(m.tags) for m in recorded] == [dict(m.tags) for m in sorted(members)]


def test_read_nodes_missing_directory(tmp_path: Path) -> None:
    assert read_nodes(tmp_path / "absent") == ([], [])


def test_read_nodes_reports_malformed_and_mismatched(tmp_path: Path) -> None:
    sync_nodes(tmp_path, [backend("s1", "10.0.0.1")])
    (tmp_path / "s2").write_text("s3 10.0.0.3 3000 port=3000,role=backend\n")
    (tmp_path / "s4").write_text("garbage\n")
    (tmp_path / "s5").write_text("s5 10.0.0.5 0 port=0,role=backend\n")
    (tmp_path / "s6").write_bytes(b"\xff\xfe binary")
    (tmp_path / ".ignored").write_text("whatever")
    (tmp_path / "dir").mkdir()

    recorded, problems = read_nodes(tmp_path)
    assert [m.name for m in recorded] == ["s1"]
    assert len(problems) == 4
    assert problems[0] == f"{tmp_path / 's2'}: file s2 describes member s3"
    assert problems[1].startswith(f"{tmp_path / 's4'}: malformed node file line 'garbage'")
    assert problems[2].startswith(f"{tmp_path / 's5'}: member s5: invalid port '0'")
    assert problems[3].startswith(f"{tmp_path / 's6'}: ")
