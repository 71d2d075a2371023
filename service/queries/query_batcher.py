"""Dynamic batching of query encoding: concurrent image and text queries share one model call.

Each request decodes and preprocesses its own image on its own thread (those run in
parallel), then hands the model input to ``EncodeBatcher.encode``. One thread runs
the model. While it runs a batch, new inputs queue up, and its next call takes them
all (up to the batch limit, same encoder and kind). Before a call it waits at most
``max_wait_ms`` for inputs that other requests are still preparing (announced with
``coming()``), and not at all when none are: a lone query goes straight in.

On a GPU a batch of 32 costs about what a batch of 1 does. On a CPU it does not pay:
measured (bench/results/query_images.md) batches of up to 4 or 32 gave 0.81-1.11x the
QPS of every request running its own forward pass on its own thread (concurrent
passes already keep the cores busy, and one model thread serialises them). So
``max_batch=0`` (the default) batches up to ``AUTO_GPU_BATCH`` for an encoder on a
CUDA device and not at all on a CPU; ``max_batch=1`` never batches; a larger number
always batches up to it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vsearch.encoders.encoder_base import Encoder

log = logging.getLogger(__name__)

AUTO_GPU_BATCH = 32

# What a job asks of the encoder: the batch of its items -> (n, dim) float32.
KINDS: dict[str, Callable[[Any, list[Any]], np.ndarray]] = {
    "pixels": lambda enc, items: enc.encode_pixels(np.stack(items)),
    "images": lambda enc, items: enc.encode_images(items),
    "texts": lambda enc, items: enc.encode_texts(items),
}


@dataclass
class _Job:
    encoder: Encoder
    kind: str
    item: Any
    future: Future[np.ndarray] = field(default_factory=Future)

    @property
    def key(self) -> tuple[int, str]:
        return id(self.encoder), self.kind


class EncodeBatcher:
    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.max_batch, self.max_wait_s = max(0, max_batch), max(0.0, max_wait_ms) / 1000
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._coming = 0  # requests preparing an input (decoding, resizing)
        self._thread: threading.Thread | None = None
        self._closed = False

    def limit(self, encoder: Encoder) -> int:
        """The largest batch for ``encoder``: the setting, or by device when it is 0."""
        if self.max_batch:
            return self.max_batch
        on_gpu = str(getattr(encoder, "device", "cpu")).startswith("cuda")
        return AUTO_GPU_BATCH if on_gpu else 1

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Announce an input being prepared: a batch about to run waits (briefly) for it."""
        with self._cond:
            self._coming += 1
        try:
            yield
        finally:
            with self._cond:
                self._coming -= 1
                self._cond.notify_all()

    def encode(self, encoder: Encoder, kind: str, item: Any) -> np.ndarray:
        """One item's vector, from a model call it may share with other requests."""
        if self.limit(encoder) <= 1:
            self.on_batch(1)
            return np.asarray(KINDS[kind](encoder, [item])[0], "float32")
        job = _Job(encoder, kind, item)
        with self._cond:
            if self._closed:
                raise RuntimeError("the query encoder batcher is closed")
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="encode", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return job.future.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                batch = self._gather()
            self._run(batch)

    def _gather(self) -> list[_Job]:
        """The next batch: the oldest job and those queued with the same key, up to
        ``max_batch``, after waiting up to ``max_wait_s`` for inputs still coming."""
        key, limit = self._jobs[0].key, self.limit(self._jobs[0].encoder)
        deadline = time.monotonic() + self.max_wait_s
        while self._coming > 0 and sum(j.key == key for j in self._jobs) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        for job in self._jobs:
            (batch if job.key == key and len(batch) < limit else rest).append(job)
        self._jobs = rest
        return batch

    def _run(self, batch: list[_Job]) -> None:
        first = batch[0]
        try:
            out = np.asarray(KINDS[first.kind](first.encoder, [j.item for j in batch]), "float32")
        except Exception as e:
            if len(batch) == 1:
                first.future.set_exception(e)
                return
            # One bad input must not fail the others: each alone, to find whose it is.
            log.warning("an encoder batch of %d failed (%s); encoding one by one", len(batch), e)
            for job in batch:
                self._run([job])
            return
        self.on_batch(len(batch))
        for job, row in zip(batch, out, strict=True):
            job.future.set_result(row)
