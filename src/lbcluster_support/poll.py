"""Poll until a condition holds, within a bounded time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold in time; ``last`` is the probe's last value (or exception)."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


def wait_until(
    probe: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.25,
    *,
    ignore: tuple[type[Exception], ...] = (Exception,),
) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something truthy; return that.

    An exception of a type in ``ignore`` (by default any :class:`Exception`: a
    port not yet open, a container restarting) counts as "not yet"; any other
    propagates. The probe runs at least once. Raises :class:`WaitTimeout` (a
    :class:`TimeoutError`) naming the last value once ``timeout`` seconds have
    passed.
    """
    if timeout < 0:
        raise ValueError(f"wait_until: timeout={timeout!r}: expected 0 or more seconds")
    if interval <= 0:
        raise ValueError(f"wait_until: interval={interval!r}: expected more than 0 seconds")
    deadline = time.monotonic() + timeout
    while True:
        try:
            value: T | Exception = probe()
        except ignore as exc:
            value = exc
        if value and not isinstance(value, Exception):
            return value
        if time.monotonic() >= deadline:
            cause = value if isinstance(value, Exception) else None
            raise WaitTimeout(
                f"condition not met within {timeout}s (last value: {value!r})", value
            ) from cause
        time.sleep(interval)
