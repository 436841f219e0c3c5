"""Background HTTP load on the balancer, as users make it: keep-alive and Connection: close.

Shared by the benchmark (bench/) and the integration tests that prove a
change drops no request. Load goes only to the URL given (127.0.0.1 by
default); every loop is bounded in count (MAX_REQUESTS) and ends when the
``with`` block does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

MAX_REQUESTS = 2_000_000  # hard cap of any load loop, whatever its duration


@dataclass
class Load:
    """Background HTTP load on ``url`` (keep-alive and Connection: close)."""

    url: str = "http://127.0.0.1:8080/"
    concurrency: int = 16
    allow_503: bool = False
    total: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _worker(self, session: aiohttp.ClientSession, close: bool) -> None:
        headers = {"Connection": "close"} if close else {}
        while not self._stop.is_set() and self.total < MAX_REQUESTS:
            self.total += 1
            try:
                async with session.get(self.url, headers=headers) as response:
                    await response.read()
                    status = response.status
                self.statuses[str(status)] += 1
                if not (200 <= status < 300 or (status == 503 and self.allow_503)):
                    self.failed += 1
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.failed += 1
                self.statuses[type(exc).__name__] += 1

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as keep,
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
            ) as close,
        ):
            half = max(1, self.concurrency // 2)
            await asyncio.gather(
                *(self._worker(keep, False) for _ in range(half)),
                *(self._worker(close, True) for _ in range(half)),
            )

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def figures(self) -> dict[str, Any]:
        return {"total": self.total, "failed": self.failed, "statuses": dict(self.statuses)}
