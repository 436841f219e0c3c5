"""Fixtures of the unit tests: no network, no containers, everything under tmp_path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FAKE_HAPROXY, FAKE_SERF, Cluster, make_executable
from hypothesis import configuration as hypothesis_configuration

# Hypothesis keeps its example database and caches in ./.hypothesis by default:
# keep them out of the repository.
hypothesis_configuration.set_hypothesis_home_dir(
    os.path.join(tempfile.gettempdir(), "lbcluster-unit-hypothesis")
)


@pytest.fixture
def fake_haproxy(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    return make_executable(bindir / "haproxy", FAKE_HAPROXY)


@pytest.fixture
def fake_serf(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    return make_executable(bindir / "serf", FAKE_SERF)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for unix sockets (their path is limited to ~107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="lbc") as name:
        yield Path(name)


@pytest.fixture(autouse=True)
def _no_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler mirrors its log to LBCLUSTER_CONSOLE when set: never in tests."""
    for key in list(os.environ):
        if key.startswith("LBCLUSTER_") or key == "SERF_EVENT":
            monkeypatch.delenv(key)


@pytest.fixture
def cluster(tmp_path: Path, short_tmp: Path, fake_serf: Path, fake_haproxy: Path) -> Cluster:
    return Cluster(tmp_path, short_tmp, fake_serf, fake_haproxy)
