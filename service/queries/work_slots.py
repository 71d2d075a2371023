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


def image_fetch_slots(size: int = 0, service_threads: int = 8) -> WorkSlots:
    """Concurrent image-URL fetches: ``size``, or when 0 a quarter of the request threads,
    at least two; none waits for a slot."""
    return WorkSlots(size or max(2, service_threads // 4), "image_fetch_busy", "image-URL fetches")


def image_decode_slots(size: int = 0) -> WorkSlots:
    """Concurrent image decodes: ``size``, or when 0 half the cores, at least one; a decode
    waits up to 0.25 s for a slot."""
    cores = os.cpu_count() or 1
    return WorkSlots(size or max(1, cores // 2), "image_decode_busy", "image decodes", wait_s=0.25)
