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

An encoder cannot mix or hold answers: each call's output must be one finite row of
the encoder's dimension per input (else a failed call, retried one input at a time, so a
bad input fails only its own request); each request waits at most ``timeout_s`` (then
503 ``encoder_timeout``, and its row, if the call ever ends, goes to no one); the
encoder thread survives any failure, and one stuck past its batch's deadlines is
replaced (up to ``MAX_STUCK``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import ApiError
from vsearch.encoders.encoder_base import Encoder

log = logging.getLogger(__name__)

AUTO_GPU_BATCH = 32
# How long a request waits for its vector: as long as a query waits for the encoder to
# load (service/queries/query_encoder.py LOAD_WAIT_S), inside HAProxy's 60 s server timeout.
ENCODE_TIMEOUT_S = 30.0
# Encoder threads left stuck in a call past every deadline, beyond which no new one starts
# (requests then time out): a hung model costs a few threads, not one per request.
MAX_STUCK = 4

# What a job asks of the encoder: the batch of its items -> (n, dim) float32.
KINDS: dict[str, Callable[[Any, list[Any]], np.ndarray]] = {
    "pixels": lambda enc, items: enc.encode_pixels(np.stack(items)),
    "images": lambda enc, items: enc.encode_images(items),
    "texts": lambda enc, items: enc.encode_texts(items),
}


class EncoderFailed(ApiError):
    """The encoder misbehaved (a wrong shape, NaN or inf, a BaseException): the server's fault."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "encoder_failed", message)


def checked(out: Any, encoder: Encoder, n: int) -> np.ndarray:
    """``out`` as (n, dim) finite float32, else EncoderFailed: a row must be its input's."""
    x = np.asarray(out, "float32")
    if x.shape != (n, encoder.dim):
        raise EncoderFailed(
            f"the query encoder returned an array of shape {x.shape} for {n} input(s); "
            f"expected ({n}, {encoder.dim})"
        )
    if not np.isfinite(x).all():
        raise EncoderFailed("the query encoder returned non-finite values (NaN or inf)")
    return x


@dataclass
class _Job:
    encoder: Encoder
    kind: str
    item: Any
    deadline: float
    future: Future[np.ndarray] = field(default_factory=Future)

    @property
    def key(self) -> tuple[int, str]:
        return id(self.encoder), self.kind

    def settle(self, row: np.ndarray | None = None, error: BaseException | None = None) -> None:
        """Answer once; a request that timed out (cancelled) takes nothing."""
        with contextlib.suppress(InvalidStateError):
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(row)  # type: ignore[arg-type]


class EncodeBatcher:
    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float,
        on_batch: Callable[[int], None] = lambda size: None,
        timeout_s: float = ENCODE_TIMEOUT_S,
    ) -> None:
        self.max_batch, self.max_wait_s = max(0, max_batch), max(0.0, max_wait_ms) / 1000
        self.on_batch, self.timeout_s = on_batch, timeout_s
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._coming = 0  # requests preparing an input (decoding, resizing)
        self._workers = 0  # encoder threads alive
        self._busy: dict[int, float] = {}  # thread ident -> last deadline of the batch it runs
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
            row: np.ndarray = checked(KINDS[kind](encoder, [item]), encoder, 1)[0]
            return row
        job = _Job(encoder, kind, item, time.monotonic() + self.timeout_s)
        with self._cond:
            if self._closed:
                raise RuntimeError("the query encoder batcher is closed")
            self._jobs.append(job)
            self._start_worker()
            self._cond.notify_all()
        with contextlib.suppress(TimeoutError):
            return job.future.result(timeout=self.timeout_s)
        if not job.future.cancel():  # answered meanwhile
            return job.future.result()
        with self._cond:  # every encoder thread may be stuck: one for the requests queued
            self._start_worker()
        raise ApiError(
            503,
            "encoder_timeout",
            f"the query encoder did not answer within {self.timeout_s:g}s; retry later",
        )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _start_worker(self) -> None:
        """A new encoder thread when none is free: none yet, or each in a call past every
        deadline of its batch (a slow or hung model), up to MAX_STUCK of those (under the lock)."""
        now = time.monotonic()
        stuck = sum(deadline < now for deadline in self._busy.values())
        if self._workers > stuck or stuck >= MAX_STUCK or not self._jobs:
            return
        if stuck:
            log.error("the query encoder is stuck in %d call(s): starting another thread", stuck)
        self._workers += 1
        threading.Thread(target=self._loop, name="encode", daemon=True).start()

    def _loop(self) -> None:
        me = threading.get_ident()
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._closed and self._workers == 1:
                        self._cond.wait()
                    if not self._jobs:  # closed, or another thread serves the queue
                        return
                    batch = self._gather()
                    self._busy[me] = max((j.deadline for j in batch), default=0.0)
                try:
                    self._run(batch)
                except BaseException as e:  # a failing callback: no request is left waiting
                    log.exception("the query encoder thread failed a batch")
                    for job in batch:
                        job.settle(error=EncoderFailed(f"encoding failed: {type(e).__name__}"))
                    if isinstance(e, KeyboardInterrupt | SystemExit):
                        raise
                finally:
                    with self._cond:
                        self._busy.pop(me, None)
        finally:
            with self._cond:
                self._workers -= 1
                self._start_worker()  # the queue outlives a thread that ended

    def _gather(self) -> list[_Job]:
        """The next batch: the oldest job and those queued with the same key, up to
        ``max_batch``, after waiting up to ``max_wait_s`` for inputs still coming.
        Requests that timed out are dropped."""
        self._jobs = deque(j for j in self._jobs if not j.future.done())
        if not self._jobs:
            return []
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
            if not job.future.done():
                (batch if job.key == key and len(batch) < limit else rest).append(job)
        self._jobs = rest
        return batch

    def _run(self, batch: list[_Job]) -> None:
        """Answer each job with its own row. A failed call (a raise, a wrong shape, NaN)
        is retried one by one: one bad input fails only its own request, and a row can
        only be its input's. A lone job's failure is its answer."""
        batch = [j for j in batch if not j.future.done()]  # timed out: their rows are no one's
        if not batch:
            return
        first = batch[0]
        try:
            items = [j.item for j in batch]
            out = checked(KINDS[first.kind](first.encoder, items), first.encoder, len(batch))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            if len(batch) == 1:
                own = isinstance(e, Exception)  # else e.g. a GeneratorExit: not the request's
                first.settle(error=e if own else EncoderFailed(f"the encoder failed: {e!r}"))
                return
            log.warning("an encoder batch of %d failed (%s); encoding one by one", len(batch), e)
            for job in batch:
                self._run([job])
            return
        self.on_batch(len(batch))
        for job, row in zip(batch, out, strict=True):
            job.settle(row)
