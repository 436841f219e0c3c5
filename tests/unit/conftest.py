"""Fixtures of the unit tests: no network, no containers, everything under tmp_path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeserf import FakeSerfAgent
from helpers import FAKE_HAPROXY, Cluster, make_executable
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
def agent() -> Iterator[FakeSerfAgent]:
    """A fake Serf agent speaking the RPC protocol on 127.0.0.1 (token ``token``)."""
    with FakeSerfAgent() as fake:
        yield fake


@pytest.fixture
def script(tmp_path: Path, short_tmp: Path, agent: FakeSerfAgent, fake_haproxy: Path) -> Cluster:
    """A balancer whose events come the lab's way: the event-handler script."""
    return Cluster(tmp_path, short_tmp, agent, fake_haproxy)


@pytest.fixture(params=["service", "script"])
def cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    short_tmp: Path,
    agent: FakeSerfAgent,
    fake_haproxy: Path,
) -> Iterator[Cluster]:
    """A balancer, once with events through the service (RPC stream), once through the script."""
    balancer = Cluster(tmp_path, short_tmp, agent, fake_haproxy, way=request.param)
    yield balancer
    balancer.close()


@pytest.fixture
def service(
    tmp_path: Path, short_tmp: Path, agent: FakeSerfAgent, fake_haproxy: Path
) -> Iterator[Cluster]:
    """A balancer whose events come the production way only: the service's RPC stream."""
    balancer = Cluster(tmp_path, short_tmp, agent, fake_haproxy, way="service")
    yield balancer
    balancer.close()
