"""The trained index's commit record, ``indexes/{snapshot}/trained.json``: typed, versioned, strict.

``train_index`` writes it beside ``trained.index``; shard builds, validation,
compaction and the CLI read it by field, never by string key. Decoding is strict,
as the report's is (``vsearch.strict_json``): an unknown or missing field or a wrong
type is a ``TrainedRecordError`` naming the field. Records written before a field
existed still read: without ``version`` as version 1, without ``nshards`` or
``kmeans`` as None (and they are left out again when written).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Final

from vsearch.index.layout import trained_record_key
from vsearch.index.spec import IndexSpec
from vsearch.storage import ObjectNotFound, ObjectStore, get_json, put_json
from vsearch.strict_json import OMIT_NONE, FieldError, StrictDecoder, encode

TRAINED_RECORD_VERSION: Final = 1


class TrainedRecordError(FieldError):
    """A trained record does not match the schema; ``field`` is the path of the culprit."""


# Numbers stay as written (an int in a float field stays an int): the bytes round-trip.
_DECODER = StrictDecoder(TrainedRecordError, int_as_float=False)


@dataclass(frozen=True)
class TrainedRecord:
    """What ``trained.index`` was trained from and how; a rerun with the same
    ``input_fingerprint`` finds it and does nothing."""

    version: int = field(default=TRAINED_RECORD_VERSION, kw_only=True)
    snapshot_id: str
    input_fingerprint: str  # of the partitions, spec, seed, nq, n_train and nshards
    spec: IndexSpec
    seed: int
    nq: int  # held-out image queries, reserved for validation
    nshards: int | None = field(metadata=OMIT_NONE)  # None: written before it was recorded
    n_train: int  # the training sample's size (0 when the index needs no training)
    sha256: str  # of trained.index
    bytes: int
    train_seconds: float
    device: str  # "cpu" or "gpu"
    kmeans: str | None = field(metadata=OMIT_NONE)  # what ran the IVF k-means
    faiss_version: str
    # The snapshot whose trained index compaction copied, unchanged.
    reused_from: str | None = field(default=None, metadata=OMIT_NONE, kw_only=True)

    def __post_init__(self) -> None:
        if self.version != TRAINED_RECORD_VERSION:
            raise TrainedRecordError(
                "version",
                f"this vsearch reads trained record version {TRAINED_RECORD_VERSION}, "
                f"got {self.version}",
            )

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], encode(self))

    @classmethod
    def from_dict(cls, data: Any) -> TrainedRecord:
        if isinstance(data, dict) and "version" not in data:
            data = {**data, "version": 1}  # written before records had a version
        return _DECODER.decode(cls, data, "trained")


def write_trained_record(store: ObjectStore, record: TrainedRecord) -> str:
    """Store ``record`` at ``indexes/{snapshot}/trained.json``; return the key."""
    key = trained_record_key(record.snapshot_id)
    put_json(store, key, record.to_dict())
    return key


def find_trained_record(store: ObjectStore, snapshot_id: str) -> TrainedRecord | None:
    """The snapshot's trained record, None before training; TrainedRecordError if malformed."""
    key = trained_record_key(snapshot_id)
    data = get_json(store, key)
    if data is None:
        return None
    try:
        return TrainedRecord.from_dict(data)
    except TrainedRecordError as e:
        raise TrainedRecordError(e.field, f"{e.reason} (in {key})") from None


def read_trained_record(store: ObjectStore, snapshot_id: str) -> TrainedRecord:
    """The snapshot's trained record; ObjectNotFound before training."""
    record = find_trained_record(store, snapshot_id)
    if record is None:
        raise ObjectNotFound(
            f"{snapshot_id} has no trained index ({trained_record_key(snapshot_id)}); "
            "run train_index / `vsearch train` first"
        )
    return record
