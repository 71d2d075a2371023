"""Dynamic batching of query encoding (service/queries/query_batcher.py).

Regression: each text or image query ran its own forward pass, whatever else was
queued; now concurrent queries share one encoder call, and a lone one waits for none.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.queries.query_batcher import EncodeBatcher
from tests.service.conftest import AppFactory, BuiltSnapshot, HashEncoder
from vsearch.encoders import load_encoder


class GatedEncoder(HashEncoder):
    """Records each call's batch; the first call blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.entered.set()
        self.release.wait(10)
        if "poison" in texts:
            raise ValueError("poison")
        return super().encode_texts(texts)


def test_a_lone_query_waits_for_nothing() -> None:
    """A 10 s gathering window, nothing else queued or coming: the call runs at once."""
    enc = GatedEncoder()
    enc.release.set()
    batcher = EncodeBatcher(max_batch=32, max_wait_ms=10_000)
    started = time.monotonic()
    x = batcher.encode(enc, "texts", "a cat")
    assert time.monotonic() - started < 5  # far below the window: it did not wait for it
    assert enc.batches == [["a cat"]]
    np.testing.assert_array_equal(x, HashEncoder().encode_texts(["a cat"])[0])
    batcher.close()


def test_queries_queued_behind_a_running_call_share_the_next_one() -> None:
    enc = GatedEncoder()
    batcher = EncodeBatcher(max_batch=32, max_wait_ms=0)
    texts = [f"query {i}" for i in range(9)]
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(batcher.encode, enc, "texts", texts[0])
        assert enc.entered.wait(10)  # the model is busy with the first query
        rest = [pool.submit(batcher.encode, enc, "texts", t) for t in texts[1:]]
        while len(batcher._jobs) < 8:  # all queued behind it
            time.sleep(0.01)
        enc.release.set()
        results = [first.result(10)] + [f.result(10) for f in rest]
    assert enc.batches[0] == ["query 0"] and sorted(enc.batches[1]) == sorted(texts[1:])
    assert len(enc.batches) == 2
    expected = HashEncoder().encode_texts(texts)
    for got, want in zip(results, expected, strict=True):  # each request gets its own row
        np.testing.assert_array_equal(got, want)
    batcher.close()


def test_a_call_waits_briefly_for_inputs_still_being_prepared() -> None:
    enc = GatedEncoder()
    enc.release.set()
    batcher = EncodeBatcher(max_batch=32, max_wait_ms=10_000)
    preparing, submitted = threading.Event(), threading.Event()

    def slow_request() -> np.ndarray:
        with batcher.coming():  # decoding its image
            preparing.set()
            submitted.wait(10)
            time.sleep(0.05)
        return batcher.encode(enc, "texts", "slow")

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(slow_request)
        assert preparing.wait(10)
        fast = pool.submit(batcher.encode, enc, "texts", "fast")
        while not batcher._jobs:
            time.sleep(0.005)
        submitted.set()
        fast.result(10), slow.result(10)
    assert [sorted(b) for b in enc.batches] == [["fast", "slow"]]
    batcher.close()


def test_one_failing_input_fails_only_its_own_request() -> None:
    enc = GatedEncoder()
    batcher = EncodeBatcher(max_batch=32, max_wait_ms=0)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.encode, enc, "texts", "first")
        assert enc.entered.wait(10)
        others = {t: pool.submit(batcher.encode, enc, "texts", t) for t in ("a", "poison", "b")}
        while len(batcher._jobs) < 3:
            time.sleep(0.01)
        enc.release.set()
        first.result(10)
        assert others["a"].result(10).shape == (enc.dim,)
        assert others["b"].result(10).shape == (enc.dim,)
        with pytest.raises(ValueError, match="poison"):
            others["poison"].result(10)
    batcher.close()


def photo(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype="uint8")
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "JPEG")
    return buf.getvalue()


def test_batched_image_queries_match_one_by_one_on_a_real_model() -> None:
    """EfficientNet-Lite0 (real weights): a batch of odd-sized photos gives each photo the
    vector it gets alone."""
    from service.queries.query_embedder import QueryEmbedder

    encoder = load_encoder("efficientnet-lite0?image_size=96", device="cpu")
    photos = [photo(i, size) for i, size in enumerate([(640, 480), (97, 311), (1000, 40)] * 3)]
    sizes: list[int] = []
    alone = QueryEmbedder(lambda: encoder, None, fetch=bytes, max_pixels=10**8)
    together = QueryEmbedder(
        lambda: encoder,
        None,
        fetch=bytes,
        max_pixels=10**8,
        batcher=EncodeBatcher(max_batch=32, max_wait_ms=50, on_batch=sizes.append),
    )
    with ThreadPoolExecutor(len(photos)) as pool:
        batched = list(pool.map(together.image_bytes, photos))
    for data, got in zip(photos, batched, strict=True):
        want = alone.image_bytes(data)
        assert float(np.dot(got, want)) > 0.9999
    assert max(sizes) > 1, sizes  # 9 concurrent queries did share calls
    together.batcher.close()


def test_the_service_batches_concurrent_text_queries(
    built_snapshot: BuiltSnapshot, make_app: AppFactory
) -> None:
    enc = GatedEncoder()
    enc.info = built_snapshot.manifest.encoder
    app = make_app(
        built_snapshot.store,
        ENCODER=enc,
        QUERY_CACHE="off",
        QUERY_BATCH_MAX=32,
        QUERY_BATCH_WAIT_MS=0,
    )
    client: Any = app.test_client()

    def query(text: str) -> Any:
        return app.test_client().post("/v1/search", json={"text": text, "k": 3})

    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(query, "first")
        assert enc.entered.wait(10)
        rest = [pool.submit(query, f"text {i}") for i in range(5)]
        batcher = app.extensions["vsearch"].embedder.batcher
        while len(batcher._jobs) < 5:
            time.sleep(0.01)
        enc.release.set()
        answers = [first.result(10)] + [f.result(10) for f in rest]
    assert all(r.status_code == 200 and len(r.json["hits"]) == 3 for r in answers)
    assert [len(b) for b in enc.batches] == [1, 5]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "vsearch_query_encode_batch_size_count 2.0" in metrics


def test_by_default_queries_batch_on_a_gpu_encoder_and_not_on_a_cpu_one() -> None:
    cpu, gpu = GatedEncoder(), GatedEncoder()
    cpu.release.set()
    gpu.device = "cuda:0"  # what a PixelEncoder on a GPU says
    batcher = EncodeBatcher(max_batch=0, max_wait_ms=0)
    assert batcher.limit(cpu) == 1 and batcher.limit(gpu) == 32
    batcher.encode(cpu, "texts", "alone")
    assert batcher._workers == 0  # ran on the calling thread
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.encode, gpu, "texts", "first")
        assert gpu.entered.wait(10)
        rest = [pool.submit(batcher.encode, gpu, "texts", t) for t in ("a", "b", "c")]
        while len(batcher._jobs) < 3:
            time.sleep(0.01)
        gpu.release.set()
        first.result(10), [f.result(10) for f in rest]
    assert [len(b) for b in gpu.batches] == [1, 3]
    batcher.close()
