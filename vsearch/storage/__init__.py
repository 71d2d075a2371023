"""Object stores: one interface, a local directory and S3. ``open_store`` picks one by URL."""

from __future__ import annotations

from urllib.parse import urlparse

from vsearch.config import Settings
from vsearch.storage.json_objects import get_json, put_if_changed, put_json, put_json_if_changed
from vsearch.storage.local import LocalStore
from vsearch.storage.object_store import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoreError,
)

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PreconditionFailed",
    "StoreError",
    "get_json",
    "open_store",
    "put_if_changed",
    "put_json",
    "put_json_if_changed",
]


def open_store(url: str | None = None, settings: Settings | None = None) -> ObjectStore:
    """The store at ``url`` (default: ``settings.store``).

    ``/path`` or ``file:///path`` is a local directory; ``s3://bucket/prefix`` is S3,
    with ``settings.s3_endpoint_url`` for MinIO or moto.
    """
    settings = settings or Settings.load()
    url = url or settings.store
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalStore(parsed.path if parsed.scheme == "file" else url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{url!r}: an S3 store URL needs a bucket: s3://bucket/prefix")
        from vsearch.storage.s3 import S3Store  # boto3 only when S3 is used

        return S3Store(
            parsed.netloc,
            parsed.path,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            max_attempts=settings.s3_max_attempts,
            multipart_threshold=settings.s3_multipart_threshold_mb << 20,
        )
    raise StoreError(f"{url!r}: unsupported store URL; use a directory, file:// or s3://")
