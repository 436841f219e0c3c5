"""The handler's records: its event log, its lock and its counters.

- :class:`EventLog` appends timestamped lines to /var/log/serf.log and
  mirrors them to the container's log;
- :func:`exclusive` makes sure no two handlers change HAProxy at once;
- :func:`update_state` keeps the counters ``lbcluster-status`` shows
  (events, reloads, refused inputs, the last error).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class EventLog:
    """Appends timestamped lines to /var/log/serf.log, mirrored to the container's log."""

    def __init__(self, path: Path, console: str | None = None, prefix: str = "handler: ") -> None:
        self.path = path
        self.console = console
        self.prefix = prefix  # on stderr (a service's log adds its own)

    def __call__(self, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = f"{stamp} {message}\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            sys.stderr.write(f"lbcluster-handler: cannot write {self.path}: {exc}\n")
        sys.stderr.write(f"{self.prefix}{message}\n")
        if self.console:
            with contextlib.suppress(OSError), open(self.console, "a", encoding="utf-8") as out:
                out.write(f"handler: {message}\n")


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Never two handlers at once (the service, and `render` or `boot` from outside)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_state(path: Path, **changes: Any) -> None:
    """Counters for status and metrics: ``name_inc=n`` adds n, ``name=v`` sets."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    for key, value in changes.items():
        if key.endswith("_inc"):
            name = key[: -len("_inc")]
            state[name] = int(state.get(name, 0)) + int(value)
        else:
            state[key] = value
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def listing(groups: Iterable[tuple[str, Sequence[str]]], names_sep: str, sep: str) -> str:
    """``added s1,s2; removed s3``: the non-empty groups of names, each after its label."""
    return sep.join(f"{label} {names_sep.join(names)}" for label, names in groups if names)
