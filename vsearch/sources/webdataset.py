"""Webdataset tar shards as img2dataset writes them: ``{key}.jpg``, ``.txt``, ``.json``.

Members sharing a key (the file name up to its first dot) form one sample, and
a sample's members are consecutive in the tar. Reading streams the tar once,
front to back (``r|*``), so it works on an S3 body as well as on a file.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

from vsearch.canonical_json import json_line
from vsearch.sources.source_base import FAILED, Item

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
MAX_MEMBER_BYTES = 64 << 20  # a single tar member above this is refused, not read


def iter_samples(stream: IO[bytes], *, key_prefix: str = "") -> Iterator[Item]:
    """Items of a webdataset tar read from ``stream``; keys are ``key_prefix + member key``.

    A sample without an image member is yielded with empty bytes and a
    ``_failed`` reason in its metadata, so that the embedding stage records it.
    """
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            if name.startswith(".") or "." not in name:
                continue
            key, ext = name.split(".", 1)
            if key != current:
                if current is not None:
                    yield _sample(key_prefix + current, members)
                current, members = key, {}
            if member.size > MAX_MEMBER_BYTES:
                members[f"_too_large.{ext}"] = b""
                continue
            fileobj = tar.extractfile(member)
            members[ext.lower()] = fileobj.read() if fileobj is not None else b""
    if current is not None:
        yield _sample(key_prefix + current, members)


def _sample(key: str, members: dict[str, bytes]) -> Item:
    metadata: dict[str, Any] = {}
    if "json" in members:
        try:
            loaded = json.loads(members["json"])
            metadata = loaded if isinstance(loaded, dict) else {"json": loaded}
        except ValueError as e:
            metadata = {"json_error": str(e)[:200]}
    caption = members["txt"].decode("utf-8", errors="replace") if "txt" in members else None
    image = next((members[ext] for ext in IMAGE_EXTENSIONS if ext in members), None)
    if image is None:
        too_large = any(m.startswith("_too_large.") for m in members)
        metadata[FAILED] = "too-large" if too_large else "no-image-in-sample"
        image = b""
    return Item(key, image, caption, metadata)


class ShardWriter:
    """Writes one webdataset tar into memory, sample by sample; ``getvalue()`` gives the bytes.

    Members get a fixed mtime, owner and mode, so the same samples make the same
    bytes: a retried fetch rewrites an identical shard.
    """

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(  # noqa: SIM115 - closed by getvalue()
            fileobj=self._buf, mode="w", format=tarfile.USTAR_FORMAT
        )
        self.count = 0

    def add(self, key: str, image: bytes, caption: str | None, metadata: dict[str, Any]) -> None:
        if "." in key or "/" in key or not key:
            raise ValueError(f"invalid sample key {key!r}: no dots or slashes")
        self._member(f"{key}.jpg", image)
        if caption is not None:
            self._member(f"{key}.txt", caption.encode("utf-8"))
        self._member(f"{key}.json", json_line(metadata).encode("utf-8"))
        self.count += 1

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def getvalue(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def write_shard(samples: Iterable[tuple[str, bytes, str | None, dict[str, Any]]]) -> bytes:
    """The bytes of a tar holding ``samples`` (key, jpeg bytes, caption, metadata)."""
    writer = ShardWriter()
    for key, image, caption, metadata in samples:
        writer.add(key, image, caption, metadata)
    return writer.getvalue()
