"""lbcluster_support.poll: bounded polling, and what a timeout says."""

from __future__ import annotations

import itertools

import pytest

from lbcluster_support.poll import WaitTimeout, wait_until


def test_returns_the_first_truthy_value() -> None:
    values = iter([0, "", None, {"s1": "UP"}, "never reached"])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001) == {"s1": "UP"}


def test_an_exception_counts_as_not_yet() -> None:
    calls = itertools.count()

    def probe() -> str:
        if next(calls) < 2:
            raise ConnectionRefusedError("not listening yet")
        return "listening"

    assert wait_until(probe, timeout=5, interval=0.001) == "listening"


def test_timeout_names_the_last_value() -> None:
    with pytest.raises(WaitTimeout, match=r"not met within 0.05s \(last value: \{\}\)"):
        wait_until(dict, timeout=0.05, interval=0.01)
    with pytest.raises(TimeoutError, match=r"last value: set\(\)") as caught:
        wait_until(set, timeout=0.02, interval=0.01)
    assert caught.value.last == set()


def test_timeout_after_exceptions_names_and_chains_the_last_one() -> None:
    def probe() -> bool:
        raise ConnectionResetError("reset by peer")

    with pytest.raises(WaitTimeout, match="ConnectionResetError") as caught:
        wait_until(probe, timeout=0.02, interval=0.01)
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert caught.value.last is caught.value.__cause__


def test_exceptions_not_ignored_propagate_at_once() -> None:
    calls = itertools.count()

    def probe() -> bool:
        next(calls)
        raise KeyError("s1")

    with pytest.raises(KeyError):
        wait_until(probe, timeout=5, interval=0.001, ignore=(OSError,))
    assert next(calls) == 1


def test_the_probe_runs_at_least_once() -> None:
    assert wait_until(lambda: "now", timeout=0) == "now"


@pytest.mark.parametrize(
    ("timeout", "interval", "message"),
    [(-1, 0.1, "timeout=-1"), (1, 0, "interval=0"), (1, -0.5, "interval=-0.5")],
)
def test_bad_bounds_are_named(timeout: float, interval: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wait_until(lambda: True, timeout=timeout, interval=interval)


def test_with_nothing_ignored_the_first_exception_propagates() -> None:
    def probe() -> bool:
        raise ConnectionRefusedError("not listening yet")

    with pytest.raises(ConnectionRefusedError):
        wait_until(probe, timeout=5, interval=0.001, ignore=())
