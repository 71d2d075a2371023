"""Query embeddings: text, uploaded images and image URLs through the service's encoder.

Embeddings of texts and image URLs are cached: in Redis with a TTL (shared by
the replicas) when Redis is configured, else in a bounded in-process LRU with
the same TTL (embedded mode). A cache failure is a miss, never an error.
Uploaded images are not cached: their bytes would be the key.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from service.errors import ApiError
from service.queries.query_batcher import EncodeBatcher
from service.queries.work_slots import WorkSlots, image_decode_slots, image_fetch_slots
from vsearch.embedding.thumbnails import make_thumbnail
from vsearch.encoders.encoder_base import (
    Encoder,
    EncoderUnavailable,
    PixelEncoder,
    TextNotSupported,
)

log = logging.getLogger(__name__)

QUERY_MAX_SIDE = 1024


class QueryCache(Protocol):
    def get(self, key: str) -> np.ndarray | None: ...
    def put(self, key: str, vector: np.ndarray) -> None: ...


class MemoryQueryCache:
    """A bounded LRU with a TTL, for one process."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._items: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] < time.monotonic():
                self._items.pop(key, None)
                return None
            self._items.move_to_end(key)
            return found[1]

    def put(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl_s, vector)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class RedisQueryCache:
    def __init__(self, url: str, ttl_s: int, prefix: str = "vsearch:qemb") -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # A cache: a Redis that hangs costs a query one second, not redis-py's ten retries.
        self.client = redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        self.ttl_s, self.prefix = ttl_s, prefix

    def get(self, key: str) -> np.ndarray | None:
        try:
            data = self.client.get(f"{self.prefix}:{key}")
        except Exception as e:
            log.warning("query cache read failed: %s", e)
            return None
        return None if data is None else np.frombuffer(data, "<f4").copy()  # type: ignore[arg-type]

    def put(self, key: str, vector: np.ndarray) -> None:
        try:
            self.client.set(f"{self.prefix}:{key}", vector.astype("<f4").tobytes(), ex=self.ttl_s)
        except Exception as e:
            log.warning("query cache write failed: %s", e)


def open_query_cache(spec: str, metadata_url: str, ttl_s: int) -> QueryCache | None:
    if spec == "off":
        return None
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisQueryCache(spec, ttl_s)
    if spec == "" and metadata_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisQueryCache(metadata_url, ttl_s)
    if spec in ("", "memory"):
        return MemoryQueryCache(10_000, ttl_s)
    raise ValueError(f"query_cache {spec!r}: use '', 'memory', 'off' or a redis:// URL")


def decode_image_bytes(data: bytes, max_pixels: int) -> Any:
    """A decoded RGB image (``vsearch.imaging.decode_image``); a rejected image is a 400."""
    from vsearch.imaging import ImageRejected, decode_image

    try:
        # Query encoders work at a few hundred pixels: decoding large photos smaller is cheaper.
        return decode_image(data, max_pixels=max_pixels, max_side=QUERY_MAX_SIDE)
    except ImageRejected as e:
        raise ApiError(400, "bad_image", f"the image was rejected: {e}") from None


class QueryEmbedder:
    """Text and image queries to vectors; model calls go through ``batcher``, which may
    share one call among concurrent requests (``service.queries.query_batcher``)."""

    def __init__(
        self,
        encoder: Callable[[], Encoder | None],
        cache: QueryCache | None,
        *,
        fetch: Callable[[str], bytes],
        max_pixels: int,
        batcher: EncodeBatcher | None = None,
        on_cache: Callable[[str], None] = lambda result: None,
        fetch_slots: WorkSlots | None = None,
        decode_slots: WorkSlots | None = None,
    ) -> None:
        self._encoder, self.cache, self._fetch = encoder, cache, fetch
        # At most this many image-URL fetches and image decodes at once (503 when full):
        # neither may take every request thread or core from vector and id searches.
        self.fetch_slots = fetch_slots or image_fetch_slots(2)
        self.decode_slots = decode_slots or image_decode_slots(1)
        self.max_pixels, self.on_cache = max_pixels, on_cache
        self.batcher = batcher or EncodeBatcher(max_batch=1, max_wait_ms=0)

    def encoder(self) -> Encoder:
        try:
            enc = self._encoder()
        except EncoderUnavailable as e:
            raise ApiError(503, "encoder_unavailable", str(e)) from None
        if enc is None:
            raise ApiError(
                400, "no_encoder", "this service has no query encoder: send a vector or an id"
            )
        return enc

    def _cached(
        self, kind: str, value: str, compute: Callable[[Encoder], np.ndarray]
    ) -> np.ndarray:
        enc = self.encoder()
        key = hashlib.sha256(f"{enc.encoder_id}\0{kind}\0{value}".encode()).hexdigest()
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and hit.shape == (enc.dim,):
                self.on_cache("hit")
                return hit
            self.on_cache("miss")
        vector = compute(enc)
        if self.cache is not None:
            self.cache.put(key, vector)
        return vector

    def text(self, text: str) -> np.ndarray:
        def compute(enc: Encoder) -> np.ndarray:
            if not enc.has_text:
                raise ApiError(400, "text_not_supported", "the query encoder embeds images only")
            try:
                return self.batcher.encode(enc, "texts", text)
            except TextNotSupported as e:
                raise ApiError(400, "text_not_supported", str(e)) from None

        return self._cached("text", text, compute)

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url``, fetched in one of ``fetch_slots`` (503 when all are taken)."""
        with self.fetch_slots.take():
            return self._fetch(url)

    def image_bytes(self, data: bytes) -> np.ndarray:
        return self._image(self.encoder(), data)[0]

    def image_url(self, url: str) -> np.ndarray:
        return self._cached("image_url", url, lambda enc: self._image(enc, self.fetch(url))[0])

    def item_image(self, kind: str, value: Any) -> tuple[np.ndarray, bytes]:
        """The vector and the thumbnail of an upserted item's image (bytes or a URL,
        fetched now: an upsert is not served from the query cache)."""
        data = value if kind == "image" else self.fetch(value)
        x, thumb = self._image(self.encoder(), data, thumbnail=True)
        assert thumb is not None
        return x, thumb

    def _image(
        self, enc: Encoder, data: bytes, *, thumbnail: bool = False
    ) -> tuple[np.ndarray, bytes | None]:
        """The vector (and, asked, the thumbnail) of an image. Decoding and preprocessing run
        here, on the request's thread; the model call is batched."""
        with self.decode_slots.take(), self.batcher.coming():
            image = decode_image_bytes(data, self.max_pixels)
            thumb = make_thumbnail(image) if thumbnail else None
            pixels = enc.preprocess(image) if isinstance(enc, PixelEncoder) else None
        if pixels is not None:
            return self.batcher.encode(enc, "pixels", pixels), thumb
        return self.batcher.encode(enc, "images", image), thumb
