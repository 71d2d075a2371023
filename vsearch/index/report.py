"""The validation report, ``indexes/{snapshot}/report.json``: typed, versioned, strict.

``validate_snapshot`` writes one per snapshot; ``build_manifest`` and the CLI
read it by field, never by string key. Decoding is strict, as the manifest's
is (``vsearch.strict_json``): an unknown or missing field or a wrong type is a
``ReportError`` that names the field (``report.sweep.image_to_image[3][2]``).
A report written before the ``version`` field existed reads as version 1: a
retried task reuses it.

The JSON keys are the ones reports always had. Text->image entries are left
out of ``queries`` and ``sweep`` when there were no caption queries (while
``recall.text_to_image`` is null), and ``recall@100`` when the snapshot holds
too few vectors for 100 exact neighbours. Numbers are kept as written (an int
in a float field stays an int), so a report round-trips to the same bytes.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from vsearch.canonical_json import json_bytes
from vsearch.index.layout import report_key
from vsearch.index.spec import IndexSpec, Metric
from vsearch.storage import ObjectNotFound, ObjectStore, get_json, put_json
from vsearch.strict_json import OMIT_NONE, FieldError, StrictDecoder, encode

REPORT_VERSION: Final = 1
IMAGE: Final = "image_to_image"
TEXT: Final = "text_to_image"


class ReportError(FieldError):
    """A report does not match the schema; ``field`` is the dotted path of the culprit."""


# Numbers stay as written (an int in a float field stays an int): the bytes round-trip.
_DECODER = StrictDecoder(ReportError, int_as_float=False)


@dataclass(frozen=True)
class TrainedInfo:
    """The trained, empty index every shard was built from."""

    uri: str
    sha256: str
    bytes: int
    n_train: int
    seed: int
    train_seconds: float
    device: str


@dataclass(frozen=True)
class ShardRecord:
    """A shard's commit record (``shard-XXXX.json``) as ``build_shard`` wrote it."""

    uri: str
    sha256: str
    bytes: int
    ntotal: int
    id_range: tuple[int, int]  # [-1, -1] when the shard is empty
    shard: int
    nshards: int
    input_fingerprint: str
    trained_sha256: str
    refine_bytes: int  # re-ranking codes: the part the service may leave on disk
    add_seconds: float

    @classmethod
    def from_dict(cls, data: Any, path: str = "shard") -> ShardRecord:
        return _DECODER.decode(cls, data, path)


@dataclass(frozen=True)
class Sizes:
    total_bytes: int
    resident_bytes_per_vector: float
    disk_bytes_per_vector: float
    refine_bytes_per_vector: float

    @classmethod
    def of_shards(cls, shards: tuple[ShardRecord, ...]) -> Sizes:
        """Bytes per vector: resident (RAM) and on disk, the re-ranking codes apart."""
        ntotal = max(sum(s.ntotal for s in shards), 1)
        total = sum(s.bytes for s in shards)
        refine = sum(s.refine_bytes for s in shards)
        return cls(
            total_bytes=total,
            resident_bytes_per_vector=round((total - refine) / ntotal, 2),
            disk_bytes_per_vector=round(total / ntotal, 2),
            refine_bytes_per_vector=round(refine / ntotal, 2),
        )


@dataclass(frozen=True)
class QueryCounts:
    image_to_image: int
    text_to_image: int | None = field(metadata=OMIT_NONE)
    text_key: str | None  # the caption vectors' key, None without text queries


@dataclass(frozen=True)
class SweepPoint:
    """One nprobe for one query kind; JSON ``[nprobe, recall@1, recall@10, ms]``."""

    json_array: ClassVar[bool] = True
    nprobe: int  # 0 for an exact index, which has no nprobe
    recall_at_1: float
    recall_at_10: float
    ms_per_query: float  # one thread


@dataclass(frozen=True)
class CurvePoint:
    """The worst kind's recall@10 and the ms per query over all kinds; ``[nprobe, r, ms]``."""

    json_array: ClassVar[bool] = True
    nprobe: int
    recall_at_10: float
    ms_per_query: float


@dataclass(frozen=True)
class Sweep:
    image_to_image: tuple[SweepPoint, ...]
    text_to_image: tuple[SweepPoint, ...] | None = field(metadata=OMIT_NONE)

    def by_kind(self) -> dict[str, tuple[SweepPoint, ...]]:
        """The kinds measured, image first: the columns of the CLI's table."""
        kinds = {IMAGE: self.image_to_image, TEXT: self.text_to_image}
        return {kind: points for kind, points in kinds.items() if points is not None}


@dataclass(frozen=True)
class KindRecall:
    """Recall at the default nprobe (or, with none, the last one tried)."""

    recall_at_1: float = field(metadata={"json": "recall@1"})
    recall_at_10: float = field(metadata={"json": "recall@10"})
    recall_at_100: float | None = field(metadata={"json": "recall@100", **OMIT_NONE})

    def as_dict(self) -> dict[str, float]:
        """``{"recall@1": .., "recall@10": .., "recall@100": ..}``, as stored."""
        return typing.cast(dict[str, float], encode(self))


@dataclass(frozen=True)
class Recall:
    image_to_image: KindRecall
    text_to_image: KindRecall | None

    def by_kind(self) -> dict[str, KindRecall | None]:
        return {IMAGE: self.image_to_image, TEXT: self.text_to_image}


@dataclass(frozen=True)
class Latency:
    ms_per_query_at_default: float | None
    max_query_ms: float | None
    ok: bool | None  # None without a budget or without a default nprobe


@dataclass(frozen=True)
class Gate:
    passed: bool
    reason: str


@dataclass(frozen=True)
class Seconds:
    ground_truth: float
    validate: float


@dataclass(frozen=True)
class ValidationReport:
    """What ``validate_snapshot`` measured, and whether the snapshot may be published."""

    version: int = field(default=REPORT_VERSION, kw_only=True)
    snapshot_id: str
    input_fingerprint: str  # of the shards, queries and target: a rerun reuses the report
    spec: IndexSpec
    metric: Metric
    trained: TrainedInfo
    shards: tuple[ShardRecord, ...]
    ntotal: int
    sizes: Sizes
    queries: QueryCounts
    threads: int
    target_recall: float
    default_nprobe: int | None
    sweep: Sweep
    curve: tuple[CurvePoint, ...]  # nprobe ascending; empty for an exact index
    recall: Recall
    latency: Latency
    gate: Gate
    seconds: Seconds

    def __post_init__(self) -> None:
        if self.version != REPORT_VERSION:
            raise ReportError(
                "version", f"this vsearch reads report version {REPORT_VERSION}, got {self.version}"
            )

    def to_dict(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], encode(self))

    def to_json(self) -> bytes:
        """The stored bytes: sorted keys, so the same report always writes the same object."""
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> ValidationReport:
        if isinstance(data, dict) and "version" not in data:
            data = {**data, "version": 1}  # written before reports had a version
        return _DECODER.decode(cls, data, "report")

    @classmethod
    def from_json(cls, text: str | bytes) -> ValidationReport:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ReportError("report", f"not valid JSON: {e}") from None
        return cls.from_dict(data)


def write_report(store: ObjectStore, report: ValidationReport) -> str:
    """Store ``report`` at ``indexes/{snapshot}/report.json``; return the key."""
    key = report_key(report.snapshot_id)
    put_json(store, key, report.to_dict())
    return key


def read_report(store: ObjectStore, snapshot_id: str) -> ValidationReport:
    """The snapshot's report; ObjectNotFound before validation, ReportError if malformed."""
    key = report_key(snapshot_id)
    data = get_json(store, key)
    if data is None:
        raise ObjectNotFound(f"{snapshot_id} has no {key}; validate the snapshot first")
    try:
        return ValidationReport.from_dict(data)
    except ReportError as e:
        raise ReportError(e.field, f"{e.reason} (in {key})") from None


def format_report(report: ValidationReport) -> list[str]:
    """The lines ``vsearch validate`` prints: sizes, the nprobe sweep, recall, the gate."""
    sizes, sweep, gate = report.sizes, report.sweep.by_kind(), report.gate
    lines = [
        f"{report.snapshot_id}: {report.spec.factory}, {report.ntotal} vectors",
        f"  bytes/vector: {sizes.resident_bytes_per_vector} resident, "
        f"{sizes.refine_bytes_per_vector} re-ranking (may stay on disk)",
        "  nprobe  " + "  ".join(f"{kind[:5]}@10    ms" for kind in sweep),
    ]
    for row in zip(*sweep.values(), strict=True):
        cells = "  ".join(f"{p.recall_at_10:8.4f} {p.ms_per_query:6.3f}" for p in row)
        lines.append(f"  {row[0].nprobe:6d}  {cells}")
    for kind, recall in report.recall.by_kind().items():
        if recall is not None:
            lines.append(f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in recall.as_dict().items()))
    lines.append(
        f"  default nprobe {report.default_nprobe}; gate "
        f"{'passed' if gate.passed else 'FAILED'}: {gate.reason}"
    )
    return lines
