"""The Manifest: the one contract between the offline pipeline and the query service.

A manifest is immutable once written (``manifests/{snapshot_id}.json``) and
describes one complete, recall-checked snapshot. JSON (de)serialisation is
strict (``vsearch.strict_json``): an unknown or missing field, a wrong type or
an out-of-range value is a ``ManifestError`` that names the field
(``manifest.shards[2].sha256``).

Snapshot ids sort chronologically: ``YYYYMMDDTHHMMSSZ`` from the run's logical
date, optionally followed by ``-tag`` parts (``20261121T000000Z-compact1``).
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from vsearch.strict_json import FieldError, StrictDecoder, encode

SCHEMA_VERSION = 2
# 2 added ``thumbnails``; a version-1 manifest reads as one without thumbnails.
READABLE_VERSIONS = (1, 2)
SNAPSHOT_ID_RE = re.compile(r"^\d{8}T\d{6}Z(?:-[A-Za-z0-9]+)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_WATERMARK_RE = re.compile(r"^\d+-\d+$")


class ManifestError(FieldError):
    """A manifest does not match the schema; ``field`` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)


# Every field required, none unknown; an int in a float field is read as a float.
_DECODER = StrictDecoder(ManifestError, int_as_float=True)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ManifestError(name, message)


def snapshot_id_for(logical_date: datetime, tag: str | None = None) -> str:
    """The snapshot id of a run: its logical date in UTC, plus an optional tag."""
    if logical_date.tzinfo is None:
        raise ValueError("logical_date must be timezone-aware")
    sid = logical_date.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{sid}-{tag}" if tag else sid


def check_snapshot_id(snapshot_id: str) -> str:
    if not SNAPSHOT_ID_RE.match(snapshot_id):
        raise ValueError(
            f"invalid snapshot id {snapshot_id!r}: expected YYYYMMDDTHHMMSSZ[-tag], "
            "e.g. 20261121T000000Z"
        )
    return snapshot_id


@dataclass(frozen=True)
class ObjectRef:
    """An object in the store (key relative to the store root) with its size and checksum."""

    uri: str
    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        _check(bool(self.uri) and not self.uri.startswith("/"), "uri", "must be a relative key")
        _check(bool(_SHA256_RE.match(self.sha256)), "sha256", "must be 64 lowercase hex digits")
        _check(self.bytes >= 0, "bytes", "must be >= 0")


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    model_id: str
    revision: str
    dim: int
    normalized: bool

    def __post_init__(self) -> None:
        _check(self.dim > 0, "dim", "must be > 0")


@dataclass(frozen=True)
class IndexInfo:
    factory: str
    nlist: int | None
    m: int | None
    nbits: int | None
    opq: bool
    refine: str | None
    default_nprobe: int | None
    # The trained, empty index: lets compaction add to it without retraining.
    trained: ObjectRef | None


@dataclass(frozen=True)
class ShardInfo:
    uri: str
    sha256: str
    bytes: int
    ntotal: int
    id_range: tuple[int, int]

    def __post_init__(self) -> None:
        ObjectRef(self.uri, self.sha256, self.bytes)
        _check(self.ntotal >= 0, "ntotal", "must be >= 0")
        _check(self.id_range[0] <= self.id_range[1], "id_range", "must be [min_id, max_id]")

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.uri, self.sha256, self.bytes)


@dataclass(frozen=True)
class MetadataInfo:
    files: tuple[ObjectRef, ...]
    count: int


@dataclass(frozen=True)
class ThumbnailPack:
    """A partition's thumbnails: the pack and its table (``vsearch.embedding.thumbnails``)."""

    pack: ObjectRef
    table: ObjectRef


@dataclass(frozen=True)
class ThumbnailInfo:
    packs: tuple[ThumbnailPack, ...]
    count: int

    def __post_init__(self) -> None:
        _check(self.count >= 0, "count", "must be >= 0")


@dataclass(frozen=True)
class RecallInfo:
    image_to_image_at_10: float | None = field(metadata={"json": "image_to_image@10"})
    text_to_image_at_10: float | None = field(metadata={"json": "text_to_image@10"})
    # [nprobe, recall@10, ms_per_query], nprobe ascending.
    curve: tuple[tuple[int, float, float], ...]


@dataclass(frozen=True)
class Lineage:
    dag_id: str | None
    run_id: str | None
    sources: tuple[str, ...]
    item_count: int
    failures: int


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    snapshot_id: str
    created_at: str
    previous_snapshot_id: str | None
    encoder: EncoderInfo
    metric: Literal["ip", "l2"]
    index: IndexInfo
    shards: tuple[ShardInfo, ...]
    metadata: MetadataInfo
    # Null in a version-1 manifest and for a snapshot whose partitions have none.
    thumbnails: ThumbnailInfo | None
    recall: RecallInfo
    # The delta-log position ("ms-seq") folded into this snapshot; LOG_ORIGIN ("0-0"),
    # see vsearch.delta.watermarks, for none.
    delta_watermark: str
    lineage: Lineage

    def __post_init__(self) -> None:
        _check(
            self.schema_version in READABLE_VERSIONS,
            "schema_version",
            f"this vsearch reads schemas {READABLE_VERSIONS}, got {self.schema_version}",
        )
        _check(
            self.schema_version >= 2 or self.thumbnails is None,
            "thumbnails",
            "needs schema_version 2",
        )
        for name in ("snapshot_id", "previous_snapshot_id"):
            value = getattr(self, name)
            _check(
                value is None or bool(SNAPSHOT_ID_RE.match(value)),
                name,
                f"{value!r} is not YYYYMMDDTHHMMSSZ[-tag]",
            )
        try:
            datetime.fromisoformat(self.created_at)
        except ValueError:
            raise ManifestError("created_at", f"{self.created_at!r} is not ISO 8601") from None
        _check(
            bool(_WATERMARK_RE.match(self.delta_watermark)),
            "delta_watermark",
            f"{self.delta_watermark!r} is not 'ms-seq'",
        )

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def objects(self) -> list[tuple[str, ObjectRef]]:
        """Every object the snapshot names, with the field that names it."""
        refs = [(f"shards[{i}]", s.ref) for i, s in enumerate(self.shards)]
        refs += [(f"metadata.files[{i}]", r) for i, r in enumerate(self.metadata.files)]
        if self.index.trained is not None:
            refs.append(("index.trained", self.index.trained))
        for i, p in enumerate(self.thumbnails.packs if self.thumbnails else ()):
            refs += [
                (f"thumbnails.packs[{i}].pack", p.pack),
                (f"thumbnails.packs[{i}].table", p.table),
            ]
        return refs

    @staticmethod
    def checksummed(where: str) -> bool:
        """Whether publishing streams the object named at ``where`` to check its sha256.
        Thumbnail packs are checked by size only: they outweigh the rest of a snapshot,
        and each thumbnail is checked against its table's crc32 when it is read."""
        return not where.endswith(".pack")

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], encode(self))

    def to_json(self) -> bytes:
        """Deterministic bytes: the same manifest always serialises the same way."""
        return (json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if isinstance(data, dict) and data.get("schema_version") == 1 and "thumbnails" not in data:
            data = {**data, "thumbnails": None}
        return _DECODER.decode(cls, data, "manifest")

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError("manifest", f"not valid JSON: {e}") from None
        return cls.from_dict(data)
