"""lbcluster.secretfiles: a container's secrets are files; errors name them, never show them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lbcluster.paths import Paths
from lbcluster.secretfiles import MAX_BYTES, SecretUnavailable, gossip_key, read_secret, rpc_token

TOKEN = "Zx8q2LmN4pRt6VwY"  # noqa: S105 (a test value)
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_the_secrets_directory_is_the_mount_point_unless_overridden() -> None:
    assert Paths().secrets_dir == Path("/run/secrets/lbcluster")
    assert Paths.from_env({"LBCLUSTER_SECRETS_DIR": "/x"}).secrets_dir == Path("/x")


def test_rpc_token_is_the_first_line_without_its_newline(tmp_path: Path) -> None:
    (tmp_path / "serf-rpc").write_text(f"{TOKEN}\n")
    assert rpc_token(tmp_path) == TOKEN


def test_missing_token_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable) as exc:
        rpc_token(tmp_path)
    assert str(exc.value) == f"cannot read the Serf RPC token: {tmp_path}/serf-rpc: no such file"


def test_unreadable_token_names_the_file_and_the_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "serf-rpc"
    token.write_text(TOKEN)
    real_open = Path.open

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        if self == token:  # the tests may run as root, who reads any file
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(SecretUnavailable) as exc:
        rpc_token(tmp_path)
    assert str(exc.value) == (
        f"cannot read the Serf RPC token: {token}: permission denied to uid {os.geteuid()}"
    )


def test_a_directory_in_place_of_the_token(tmp_path: Path) -> None:
    (tmp_path / "serf-rpc").mkdir()
    with pytest.raises(SecretUnavailable, match=r"serf-rpc: Is a directory$"):
        rpc_token(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n\n",
        b"SeCrEtA SeCrEtB\n",
        b"SeCrEtA\nSeCrEtB\n",
        "SeCr\u00e9tA".encode(),
        b"SeCrEtA\tSeCrEtB",
        b"x" * (MAX_BYTES + 1),
    ],
)
def test_malformed_token_is_refused_without_showing_it(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "serf-rpc").write_bytes(content)
    with pytest.raises(SecretUnavailable) as exc:
        rpc_token(tmp_path)
    message = str(exc.value)
    assert message.startswith(f"the Serf RPC token in {tmp_path}/serf-rpc is malformed")
    for word in content.split():
        assert word.decode(errors="replace") not in message
    if not content.strip():
        assert message.endswith("(the file is empty)")


def test_the_longest_token_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "serf-rpc").write_bytes(b"x" * MAX_BYTES)
    assert rpc_token(tmp_path) == "x" * MAX_BYTES


@pytest.mark.parametrize(
    "key",
    [
        KEY,  # 32 bytes, as cluster_secrets makes it
        "MDEyMzQ1Njc4OWFiY2RlZg==",  # 16 bytes
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",  # 24 bytes
    ],
)
def test_gossip_keys_serf_accepts(tmp_path: Path, key: str) -> None:
    (tmp_path / "serf-encrypt-key").write_text(key + "\n")
    assert gossip_key(tmp_path) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("not-base64", "is not base64 of a 16, 24 or 32-byte key"),
        ("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY", "is not base64"),  # no padding
        ("c2hvcnQ=", "is 5 bytes once decoded: expected 16, 24 or 32"),
        ("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYwMQ==", "is 34 bytes once decoded"),
    ],
)
def test_malformed_gossip_key_names_the_file_without_showing_it(
    tmp_path: Path, key: str, why: str
) -> None:
    (tmp_path / "serf-encrypt-key").write_text(key + "\n")
    with pytest.raises(SecretUnavailable) as exc:
        gossip_key(tmp_path)
    assert str(exc.value).startswith(f"the Serf gossip key in {tmp_path}/serf-encrypt-key ")
    assert why in str(exc.value)
    assert key not in str(exc.value)


def test_missing_gossip_key_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable) as exc:
        gossip_key(tmp_path)
    assert str(exc.value) == (
        f"cannot read the Serf gossip key: {tmp_path}/serf-encrypt-key: no such file"
    )


def test_read_secret_names_what_it_reads(tmp_path: Path) -> None:
    with pytest.raises(SecretUnavailable, match=r"^cannot read the thing: "):
        read_secret(tmp_path / "nothing", "the thing")
