"""Bounds on heavy work done on request threads: image-URL fetches and image decoding.

A fetch from a slow host holds a request thread up to its deadline, and decoding a
large photo holds a core for a second or more; without a bound a few clients doing
either take every request thread and core, and vector and id searches and health
checks wait behind them. ``WorkSlots`` lets at most ``size`` run at once; a request
that finds them all taken (after at most ``wait_s``) is answered 503 with a
``Retry-After`` at once, so it never queues behind them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import ApiError


class WorkSlots:
    def __init__(self, size: int, code: str, what: str, *, wait_s: float = 0.0) -> None:
        if size < 1:
            raise ValueError(f"{what}: at least one slot is needed, not {size}")
        self.size, self.code, self.what, self.wait_s = size, code, what, wait_s
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot for the block; raises ApiError 503 when none frees in time."""
        if not self._slots.acquire(timeout=self.wait_s):  # 0: not at all
            raise ApiError(
                503,
                self.code,
                f"{self.size} {self.what} already running, the most this replica runs at "
                "once; retry shortly",
                retry_after=1,
            )
        try:
            yield
        finally:
            self._slots.release()


def fetch_slots_default(service_threads: int) -> int:
    """Concurrent image-URL fetches when the setting is 0: a quarter of the request
    threads, at least two."""
    return max(2, service_threads // 4)


def decode_slots_default() -> int:
    """Concurrent image decodes when the setting is 0: half the cores, at least one."""
    return max(1, (os.cpu_count() or 1) // 2)
