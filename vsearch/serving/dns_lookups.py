"""DNS lookups that cannot starve each other.

``getaddrinfo`` has no timeout, and a name whose name server never answers holds the
thread that looks it up for as long as the system resolver tries (tens of seconds).
Lookups run on a small pool of threads; the caller waits only until its deadline.
Without more, names of a silent name server would hold every thread and every later
lookup, of any name, would wait its whole deadline. So:

- lookups of the same name at once share one thread (and its answer);
- names under one parent domain (its last two labels) hold at most ``per_domain``
  threads at once: one silent name server cannot take them all;
- when every thread is held, a lookup is refused at once (``LookupsBusy``) instead of
  queueing behind lookups that may never end.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from vsearch.serving.deadline_http import Deadline, DeadlinePassed

Resolver = Callable[[str, int], list[str]]


class LookupsBusy(Exception):
    """No lookup thread is free for this name now; the message says why. Retry later."""


def parent_domain(host: str) -> str:
    """The name's last two labels (an address literal: itself): lookups under it share a cap."""
    host = host.rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return ".".join(host.split(".")[-2:])


class LookupPool:
    def __init__(self, workers: int = 8, per_domain: int | None = None) -> None:
        self.workers = workers
        self.per_domain = per_domain or max(1, workers // 4)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="safe-fetch-dns")
        self._lock = threading.RLock()  # a done callback may run in the submitting thread
        self._running = 0  # lookups started and not finished, those given up on included
        self._by_domain: Counter[str] = Counter()
        self._shared: dict[tuple[Resolver, str, int], Future[list[str]]] = {}

    def resolve(self, resolver: Resolver, host: str, port: int, deadline: Deadline) -> list[str]:
        """``resolver(host, port)``, waited for only until the deadline (``DeadlinePassed``);
        raises ``LookupsBusy`` at once when no thread may take it."""
        left = deadline.remaining()
        key, domain = (resolver, host.lower(), port), parent_domain(host)
        with self._lock:
            lookup = self._shared.get(key)
            if lookup is None:
                if self._running >= self.workers:
                    raise LookupsBusy(
                        f"all {self.workers} DNS lookup threads wait on slow name servers"
                    )
                if self._by_domain[domain] >= self.per_domain:
                    raise LookupsBusy(
                        f"{self.per_domain} lookups of names under {domain!r} are still waiting"
                    )
                self._running += 1
                self._by_domain[domain] += 1
                lookup = self._pool.submit(resolver, host, port)
                self._shared[key] = lookup
                lookup.add_done_callback(lambda done: self._finished(key, domain, done))
        try:
            return list(lookup.result(timeout=left))
        except TimeoutError:
            raise DeadlinePassed(f"resolving {host!r} took too long") from None

    def _finished(
        self, key: tuple[Resolver, str, int], domain: str, done: Future[list[str]]
    ) -> None:
        with self._lock:
            self._running -= 1
            self._by_domain[domain] -= 1
            if self._shared.get(key) is done:
                del self._shared[key]
