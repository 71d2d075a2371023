"""A misbehaving encoder behind the query batcher (service/queries/query_batcher.py).

Regression: an encoder that returned one row short for a batch of three answered two
requests with another request's vector, left the third waiting forever and ended the
batching thread, so that every later text or image query waited forever.

The encoder is an in-process component, so these tests use a small fake encoder object
(``FaultyEncoder``, on conftest's deterministic ``HashEncoder``) and real threads: the
fake misbehaves in one chosen way whenever a call's batch holds the text "bad".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from service.errors import ApiError
from service.queries.query_batcher import EncodeBatcher
from tests.service.conftest import AppFactory, BuiltSnapshot, HashEncoder

WAIT_S = 10  # a test's own bound on any answer: a hang fails instead of hanging


class Boom(BaseException):
    """Neither an Exception nor KeyboardInterrupt/SystemExit."""


class FaultyEncoder(HashEncoder):
    """Misbehaves (``fault``) on every call whose batch holds "bad"; a call holding
    "first" blocks until ``gate`` is set, so that later requests queue behind it."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault
        self.gate, self.entered = threading.Event(), threading.Event()
        self.unstick, self.slow_done = threading.Event(), threading.Event()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if "first" in texts:
            self.entered.set()
            self.gate.wait(WAIT_S)
        out = super().encode_texts(texts)
        if "bad" not in texts:
            return out
        if self.fault == "raise":
            raise RuntimeError("the model broke")
        if self.fault == "base":
            raise Boom("not an Exception")
        if self.fault == "slow":
            self.unstick.wait(WAIT_S)  # until the test lets it go, past every deadline
            self.slow_done.set()
            return out
        return {
            "short": lambda: out[1:],  # rows no longer line up with inputs
            "extra": lambda: np.concatenate([out, out[:1]]),
            "dim": lambda: out[:, :-1],
            "nan": lambda: np.where(np.arange(len(out))[:, None] == 0, np.nan, out),
            "inf": lambda: np.full_like(out, np.inf),
        }[self.fault]()


def submit(fn: Any, *args: Any) -> Future[Any]:
    """``fn(*args)`` on a daemon thread of its own: a request that hangs fails its test
    (at ``result(WAIT_S)``) without holding the test run at exit, as a pool's would."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return future


def own(text: str) -> np.ndarray:
    return HashEncoder().encode_texts([text])[0]


FAULTS = ["raise", "base", "short", "extra", "dim", "nan", "inf"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_misbehaving_batch_fails_only_its_bad_request(fault: str) -> None:
    """The batch ["a", "bad", "b"] misbehaves: it is retried one by one, so "a" and "b"
    get their own vectors and "bad" an error; a request of another encoder (another batch),
    queued at the same time, gets its own vector; and a request afterwards is answered."""
    enc, other = FaultyEncoder(fault), HashEncoder()
    batcher = EncodeBatcher(max_batch=32, max_wait_ms=0, timeout_s=WAIT_S)
    first = submit(batcher.encode, enc, "texts", "first")
    assert enc.entered.wait(WAIT_S)  # the encoder thread is busy: the rest queue
    queued = {t: submit(batcher.encode, enc, "texts", t) for t in ("a", "bad", "b")}
    elsewhere = submit(batcher.encode, other, "texts", "other")
    wait_queued(batcher, 4)
    enc.gate.set()
    np.testing.assert_array_equal(first.result(WAIT_S), own("first"))
    np.testing.assert_array_equal(queued["a"].result(WAIT_S), own("a"))
    np.testing.assert_array_equal(queued["b"].result(WAIT_S), own("b"))
    with pytest.raises(Exception) as failed:
        queued["bad"].result(WAIT_S)
    np.testing.assert_array_equal(elsewhere.result(WAIT_S), own("other"))
    later = submit(batcher.encode, enc, "texts", "later")
    np.testing.assert_array_equal(later.result(WAIT_S), own("later"))  # the thread lives
    if fault == "raise":
        assert isinstance(failed.value, RuntimeError)  # the encoder's own error, as unbatched
    else:
        assert isinstance(failed.value, ApiError) and failed.value.status == 503
        assert failed.value.code == "encoder_failed"
    batcher.close()


def test_a_batch_past_its_deadline_fails_and_the_queue_goes_on() -> None:
    """The batch ["a", "bad", "b"] hangs in the encoder: its requests get a 503 at their
    deadline, a request submitted while the call still hangs is answered (by another
    encoder thread), and when the stuck call ends its rows go to no one."""
    enc = FaultyEncoder("slow")
    batcher = EncodeBatcher(max_batch=32, max_wait_ms=0, timeout_s=2.0)
    first = submit(batcher.encode, enc, "texts", "first")
    assert enc.entered.wait(WAIT_S)
    queued = [submit(batcher.encode, enc, "texts", t) for t in ("a", "bad", "b")]
    wait_queued(batcher, 3)
    enc.gate.set()  # "first" is answered; the batch of "bad" then hangs until unstick
    first.result(WAIT_S)
    for future in queued:
        with pytest.raises(ApiError) as failed:
            future.result(WAIT_S)
        assert failed.value.status == 503 and failed.value.code == "encoder_timeout"
    during = submit(batcher.encode, HashEncoder(), "texts", "during")
    np.testing.assert_array_equal(during.result(WAIT_S), own("during"))
    assert not enc.slow_done.is_set()  # answered while the bad call still hung
    enc.unstick.set()
    assert enc.slow_done.wait(WAIT_S)
    later = [submit(batcher.encode, enc, "texts", t) for t in ("x", "y")]
    for text, future in zip(("x", "y"), later, strict=True):
        np.testing.assert_array_equal(future.result(WAIT_S), own(text))
    batcher.close()


def wait_queued(batcher: EncodeBatcher, n: int) -> None:
    done = threading.Event()
    for _ in range(1000):
        if len(batcher._jobs) >= n:
            return
        done.wait(0.01)
    raise AssertionError(f"{len(batcher._jobs)} of {n} requests queued")


def test_a_text_search_gets_a_json_error_from_a_broken_encoder(
    built_snapshot: BuiltSnapshot, make_app: AppFactory
) -> None:
    """Through the service: an encoder returning no row for a text answers 503
    encoder_failed (JSON), not a hang, and the next text search is answered."""
    enc = FaultyEncoder("short")
    enc.info = built_snapshot.manifest.encoder
    app = make_app(built_snapshot.store, ENCODER=enc, QUERY_CACHE="off", QUERY_BATCH_MAX=32)

    def search(text: str) -> Future[Any]:
        client: Any = app.test_client()
        return submit(lambda: client.post("/v1/search", json={"text": text, "k": 3}))

    bad = search("bad").result(WAIT_S)
    assert bad.status_code == 503, bad.json
    assert bad.json["error"]["code"] == "encoder_failed"
    good = search("a cat").result(WAIT_S)
    assert good.status_code == 200 and len(good.json["hits"]) == 3
