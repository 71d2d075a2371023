"""Image sources: where the items of a snapshot come from.

``open_source(uri)`` picks one by the URI's shape:

==============================================  =========================================
``/data/photos`` or ``file:///data/photos``     a directory of images (or of tar shards)
``/data/cifar10-train-*.tar``, ``x.tar``        webdataset tar shards on the filesystem
``store:images/coco/``                          tar shards or images under a prefix of the
                                                project's store (``store=`` required)
``s3://bucket/prefix/``                         tar shards or images under an S3 prefix
``urls.csv``, ``.tsv``, ``.jsonl``, ``.parquet``  a URL list (local, ``store:`` or ``s3://``),
                                                fetched into ``images/{dataset}/`` of the
                                                store (``store=`` required)
``/data/vectors.npy``, ``emb.parquet`` (with an  precomputed embeddings (``vectors.py``):
``embedding`` column), a directory of them      the run skips the encoder
==============================================  =========================================

Every source has ``partitions()`` (small JSON-able dicts, for Airflow XCom) and
``items(spec)`` yielding ``Item(key, data, caption, metadata)``; see
``docs/embedding.md`` for the key scheme of each.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from vsearch.config import Settings
from vsearch.sources.fetch import FetchOptions
from vsearch.sources.listed import ListedSource, StoreListing, local_source
from vsearch.sources.precomputed import VectorSource, is_vector_path
from vsearch.sources.source_base import FAILED, Item, PartitionSpec, Source, SourceError
from vsearch.sources.urls import LIST_SUFFIXES, UrlListSource
from vsearch.storage import ObjectStore, open_store

__all__ = [
    "FAILED",
    "FetchOptions",
    "Item",
    "PartitionSpec",
    "Source",
    "SourceError",
    "VectorSource",
    "is_url_list",
    "open_source",
]

_LISTED_OPTIONS = {"partition_size"}
_URL_OPTIONS = {"dataset", "shard_size", "url_column", "key_column", "caption_column"}


def open_source(
    uri: str, *, store: ObjectStore | None = None, settings: Settings | None = None, **options: Any
) -> Source:
    """The source at ``uri`` (see the module docstring). ``options``:

    - ``partition_size`` (image files per partition, default 10,000);
    - URL lists: ``dataset`` (default: the list's file name stem), ``shard_size``
      (rows per shard, default 10,000), ``url_column``/``key_column``/``caption_column``,
      and any ``FetchOptions`` field (``concurrency``, ``read_timeout_s``, ``max_side``...).
    """
    settings = settings or Settings.load()
    local = _local_vectors(uri)
    if local is not None:
        _check_options(uri, options, _LISTED_OPTIONS)
        return VectorSource(uri, local, **options)
    if is_url_list(uri):
        return _url_list(uri, store, settings, options)
    _check_options(uri, options, _LISTED_OPTIONS)
    if uri.startswith("store:"):
        store = _need_store(uri, store)
        return ListedSource(uri, _store_listing(store, uri[len("store:") :]), **options)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        bucket_store = open_store(f"s3://{parsed.netloc}", settings)
        return ListedSource(uri, _store_listing(bucket_store, parsed.path.lstrip("/")), **options)
    if parsed.scheme in ("", "file"):
        return local_source(uri, parsed.path if parsed.scheme == "file" else uri, **options)
    raise SourceError(f"{uri!r}: unsupported source; see vsearch.sources for the forms")


def _local_vectors(uri: str) -> Path | None:
    """The path of a local source of precomputed vectors, or None."""
    path = uri.split("?", 1)[0]
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif "://" in path or path.startswith("store:"):
        return None
    local = Path(path).expanduser()
    return local.resolve() if is_vector_path(local) else None


def is_url_list(uri: str) -> bool:
    """A URL list (by its suffix), not a local Parquet file of embeddings."""
    return uri.split("?", 1)[0].lower().endswith(LIST_SUFFIXES) and _local_vectors(uri) is None


def _store_listing(store: ObjectStore, prefix: str) -> StoreListing:
    if prefix.endswith(".tar") or re.search(r"[*?\[]", prefix.rsplit("/", 1)[-1]):
        parent, _, name = prefix.rpartition("/")
        return StoreListing(store, f"{parent}/" if parent else "", name)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return StoreListing(store, prefix)


def _need_store(uri: str, store: ObjectStore | None) -> ObjectStore:
    if store is None:
        raise SourceError(f"{uri}: this source needs the project's store (store=...)")
    return store


def _check_options(uri: str, options: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise SourceError(f"{uri}: unknown option(s) {', '.join(unknown)}")


def _url_list(
    uri: str, store: ObjectStore | None, settings: Settings, options: dict[str, Any]
) -> UrlListSource:
    fetch_fields = set(FetchOptions.__dataclass_fields__)
    _check_options(uri, options, _URL_OPTIONS | fetch_fields)
    store = _need_store(uri, store)
    fetch_options = FetchOptions(**{k: v for k, v in options.items() if k in fetch_fields})
    source_options = {k: v for k, v in options.items() if k in _URL_OPTIONS}
    location = uri.split("?", 1)[0]
    stem = PurePosixPath(location.rstrip("/")).name.split(".")[0]
    source_options.setdefault("dataset", re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "urls")

    def read_list() -> bytes:
        if location.startswith("store:"):
            return store.get(location[len("store:") :])
        parsed = urlparse(location)
        if parsed.scheme == "s3":
            return open_store(f"s3://{parsed.netloc}", settings).get(parsed.path.lstrip("/"))
        with open(parsed.path if parsed.scheme == "file" else location, "rb") as f:
            return f.read()

    return UrlListSource(uri, read_list, store=store, fetch_options=fetch_options, **source_options)
