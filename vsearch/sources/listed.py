"""Sources over a listing of files: a local directory or glob, a store prefix, an S3 prefix.

Two shapes, told apart by what the listing holds:

- **tar shards** (``*.tar``): one partition per shard; item keys are the shard's
  path relative to the listed root, without ``.tar``, then ``/`` and the sample key
  (``cifar10-test-000/000123``), because img2dataset restarts sample keys in every
  dataset;
- **image files**: partitions of ``partition_size`` files in sorted order; the item
  key is the relative path (``cats/001.jpg``); a sidecar ``{stem}.txt`` is the
  caption and ``{stem}.json`` the metadata.

A partition spec names its range and a digest of the whole listing; if the
listing changed between ``partitions()`` and ``items()``, reading refuses
rather than silently embed different items under the same partition.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from vsearch.sources.source_base import (
    Item,
    PartitionSpec,
    SourceError,
    check_spec,
    chunk_bounds,
    digest,
)
from vsearch.sources.webdataset import IMAGE_EXTENSIONS, iter_samples
from vsearch.storage import ObjectStore

DEFAULT_PARTITION_SIZE = 10_000


class Listing(Protocol):
    def names(self) -> list[str]: ...
    def open(self, name: str) -> IO[bytes]: ...
    def version(self, name: str) -> str: ...


class DirectoryListing:
    """Files under a local directory (recursively), optionally filtered by a glob pattern."""

    def __init__(self, root: Path, pattern: str | None = None) -> None:
        self.root = root
        self.pattern = pattern

    def names(self) -> list[str]:
        found = []
        for path in self.root.rglob("*") if self.pattern is None else self.root.glob(self.pattern):
            relative = path.relative_to(self.root)
            if path.is_file() and not any(p.startswith(".") for p in relative.parts):
                found.append(relative.as_posix())
        return sorted(found)

    def open(self, name: str) -> IO[bytes]:
        return open(self.root / name, "rb")

    def version(self, name: str) -> str:
        sha = hashlib.sha256()
        with self.open(name) as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        return sha.hexdigest()


class StoreListing:
    """Objects under ``prefix`` in an ObjectStore (the project's store, or any S3 prefix)."""

    def __init__(self, store: ObjectStore, prefix: str = "", pattern: str | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.pattern = pattern

    def names(self) -> list[str]:
        names = [info.key[len(self.prefix) :] for info in self.store.list(self.prefix)]
        return sorted(
            n
            for n in names
            if n
            and not n.rsplit("/", 1)[-1].startswith(".")
            and (self.pattern is None or fnmatch.fnmatch(n, self.pattern))
        )

    def open(self, name: str) -> IO[bytes]:
        return self.store.open(self.prefix + name)

    def version(self, name: str) -> str:
        info = self.store.head(self.prefix + name)
        return f"{info.etag}:{info.size}"


def _is_image(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS if "." in name else False


class ListedSource:
    """Tar shards or image files from a Listing; see the module docstring."""

    def __init__(
        self, uri: str, listing: Listing, *, partition_size: int = DEFAULT_PARTITION_SIZE
    ) -> None:
        self.uri = uri
        self.listing = listing
        self.partition_size = partition_size
        self._names: list[str] | None = None

    def _all_names(self) -> list[str]:
        if self._names is None:
            self._names = self.listing.names()
        return self._names

    def _tars(self) -> list[str]:
        return [n for n in self._all_names() if n.endswith(".tar")]

    def _images(self) -> list[str]:
        return [n for n in self._all_names() if _is_image(n)]

    def partitions(self) -> list[PartitionSpec]:
        tars, images = self._tars(), self._images()
        if tars and images:
            raise SourceError(
                f"{self.uri}: holds both tar shards and loose images; point at one or the other"
            )
        if tars:
            return [
                {"source": self.uri, "kind": "tar", "index": i, "name": name}
                for i, name in enumerate(tars)
            ]
        if not images:
            raise SourceError(f"{self.uri}: no images or tar shards found")
        listing = digest(images)
        return [
            {"source": self.uri, "kind": "images", "index": i, "start": a, "stop": b,
             "listing": listing}
            for i, (a, b) in enumerate(chunk_bounds(len(images), self.partition_size))
        ]  # fmt: skip

    def _image_slice(self, spec: PartitionSpec) -> list[str]:
        check_spec(spec, self.uri, "images")
        images = self._images()
        if digest(images) != spec["listing"]:
            raise SourceError(
                f"{self.uri}: the listing changed since the partitions were made; "
                "list the partitions again"
            )
        return images[spec["start"] : spec["stop"]]

    def items(self, spec: PartitionSpec) -> Iterator[Item]:
        if spec.get("kind") == "tar":
            check_spec(spec, self.uri, "tar")
            key_prefix = spec["name"][: -len(".tar")] + "/"
            with self.listing.open(spec["name"]) as stream:
                yield from iter_samples(stream, key_prefix=key_prefix)
            return
        names = set(self._all_names())
        for name in self._image_slice(spec):
            stem = name.rsplit(".", 1)[0]
            with self.listing.open(name) as f:
                data = f.read()
            caption = self._read_text(f"{stem}.txt").strip() if f"{stem}.txt" in names else None
            metadata: dict[str, Any] = {}
            if f"{stem}.json" in names:
                try:
                    loaded = json.loads(self._read_text(f"{stem}.json"))
                    metadata = loaded if isinstance(loaded, dict) else {"json": loaded}
                except ValueError as e:
                    metadata = {"json_error": str(e)[:200]}
            yield Item(name, data, caption, metadata)

    def _read_text(self, name: str) -> str:
        with self.listing.open(name) as f:
            return f.read().decode("utf-8", errors="replace")

    def fingerprint(self, spec: PartitionSpec) -> str:
        if spec.get("kind") == "tar":
            check_spec(spec, self.uri, "tar")
            return digest(spec, self.listing.version(spec["name"]))
        return digest(spec, [(n, self.listing.version(n)) for n in self._image_slice(spec)])


def local_source(uri: str, path: str, **options: Any) -> ListedSource:
    """A directory, a single ``.tar`` file or a glob of them (``/data/cifar10-train-*.tar``)."""
    target = Path(path).expanduser()
    if target.is_dir():
        return ListedSource(uri, DirectoryListing(target.resolve()), **options)
    if any(ch in target.name for ch in "*?["):
        parent = target.parent.resolve()
        if not parent.is_dir():
            raise SourceError(f"{uri}: directory {parent} does not exist")
        return ListedSource(uri, DirectoryListing(parent, target.name), **options)
    if target.is_file() and fnmatch.fnmatch(target.name, "*.tar"):
        return ListedSource(uri, DirectoryListing(target.resolve().parent, target.name), **options)
    raise SourceError(
        f"{uri}: not a directory, a .tar file or a glob of them (does the path exist?)"
    )
