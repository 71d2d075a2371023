"""The ObjectStore interface shared by the local-directory and S3 stores.

Keys are ``/``-separated relative paths (``indexes/20261121T000000Z/shard-0000.index``).
Every write is atomic: a reader sees either the old object, the new one, or
nothing — never a partial object. Two conditional writes give the
compare-and-swap that publishing a snapshot rests on:

- ``put(key, data, if_none_match=True)``: create only if absent (``If-None-Match: *``);
- ``put(key, data, if_match=etag)``: replace only if unchanged (``If-Match: etag``).
"""

from __future__ import annotations

import hashlib
import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
_KEY_RE = re.compile(r"^(?!/)(?!.*//)[A-Za-z0-9._\-/=+@]+(?<!/)$")


class StoreError(Exception):
    """Base class of object-store errors."""


class ObjectNotFound(StoreError, KeyError):
    """The key names no object."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "object not found"


class PreconditionFailed(StoreError):
    """A conditional write lost: the object exists (If-None-Match) or changed (If-Match)."""


class InvalidKey(StoreError, ValueError):
    """The key is not a clean relative path."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    sha256: str | None = None  # known when this process wrote or read the whole object


def check_key(key: str) -> str:
    """Refuse keys that could escape the store root or alias another key."""
    parts = key.split("/")
    if not _KEY_RE.match(key) or any(p in (".", "..") for p in parts):
        raise InvalidKey(f"invalid object key {key!r}: use a relative path like 'a/b/c.npy'")
    if any(p.startswith(".vsearch-") for p in parts):
        raise InvalidKey(f"invalid object key {key!r}: '.vsearch-' names are reserved")
    return key


class HashingReader(io.RawIOBase):
    """Wraps a readable stream, computing sha256 and size of what passes through.

    It reports itself as not seekable so that uploaders read it once, in order.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def as_stream(data: bytes | BinaryIO) -> BinaryIO:
    return io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data


class ObjectStore(ABC):
    """Where snapshots live. See the module docstring for the guarantees."""

    url: str

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Write ``data`` (bytes or a readable stream) to ``key`` atomically.

        Returns the new object's info with its sha256, computed while streaming.
        Raises PreconditionFailed when a condition does not hold.
        """

    @abstractmethod
    def open_with_info(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """A readable stream over one version of the object, and that version's info.

        The caller closes the stream. Raises ObjectNotFound.
        """

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size and etag of the object; raises ObjectNotFound."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    # Derived operations: the same for every store.

    def put_if_absent(self, key: str, data: bytes | BinaryIO) -> ObjectInfo:
        return self.put(key, data, if_none_match=True)

    def compare_and_swap(self, key: str, data: bytes, expected_etag: str | None) -> ObjectInfo:
        """Replace ``key`` only if its etag is still ``expected_etag`` (None: only if absent)."""
        if expected_etag is None:
            return self.put(key, data, if_none_match=True)
        return self.put(key, data, if_match=expected_etag)

    def open(self, key: str) -> BinaryIO:
        """A readable stream over the object; the caller closes it."""
        return self.open_with_info(key)[0]

    def get(self, key: str) -> bytes:
        return self.get_with_info(key)[0]

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """Contents and info of one version of the object: the etag belongs to these bytes."""
        stream, info = self.open_with_info(key)
        with stream:
            return stream.read(), info

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the object from ``offset`` (fewer at its end), without
        reading the rest: one ranged GET on S3, a seek on a local file."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad range: offset {offset}, length {length}")
        with self.open(key) as f:
            f.seek(offset)
            return f.read(length)

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def sha256(self, key: str) -> tuple[str, int]:
        """Stream the object and return its (sha256 hex, size)."""
        sha, size = hashlib.sha256(), 0
        with self.open(key) as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
        return sha.hexdigest(), size

    def upload_file(self, path: str | Path, key: str) -> ObjectInfo:
        with open(path, "rb") as f:
            return self.put(key, f)

    def download_file(self, key: str, path: str | Path) -> ObjectInfo:
        """Copy the object to ``path`` atomically (tmp file + rename); returns info with sha256."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        sha, size = hashlib.sha256(), 0
        with self.open(key) as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        tmp.replace(target)
        return ObjectInfo(key=key, size=size, etag="", sha256=sha.hexdigest())
