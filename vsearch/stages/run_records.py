"""Run records: what a run decided when it started, read by its later stages.

``indexes/{snapshot}/build.json`` is written by the run's first stage (``plan``
for a build, ``compact`` for a compaction) and read by ``validate`` (does the
encoder have a text tower?) and ``publish`` (lineage, previous snapshot, delta
watermark). ``embeddings/{snapshot}/encoder.json`` is written by ``embed``: the
encoder's identity as the manifest records it.

A rerun keeps the first run's answers (``previous_snapshot_id``, ``run``), so a
retried or rerun date publishes the identical, immutable manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.embedding.partitions import encoder_key
from vsearch.index.layout import run_record_key
from vsearch.manifest import EncoderInfo
from vsearch.storage import ObjectStore, get_json, put_json_if_changed

RunKind = Literal["build", "compact"]


class StageError(RuntimeError):
    """A run cannot go on: no sources, nothing embedded, a stage run out of order."""


@dataclass(frozen=True)
class RunInfo:
    """The orchestrator's run that planned the snapshot (Airflow's dag_id and run_id)."""

    dag_id: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class RunRecord:
    kind: RunKind
    sources: tuple[str, ...]
    # The encoder spec (vsearch.encoders.load_encoder) the partitions are embedded with;
    # None when the vectors come from elsewhere (compaction of a precomputed snapshot).
    encoder_spec: str | None
    # The newest snapshot older than this one when the run was planned: rollback goes there.
    previous_snapshot_id: str | None
    run: RunInfo = field(default_factory=RunInfo)
    # The delta-log position this snapshot folds in (compaction); LOG_ORIGIN for none.
    delta_watermark: str = LOG_ORIGIN
    partitions: int | None = None
    base_snapshot_id: str | None = None  # compaction: the snapshot the delta is folded into

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["sources"] = list(self.sources)
        if self.run == RunInfo():
            out["run"] = {}
        return {k: v for k, v in out.items() if v is not None or k in _ALWAYS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        run = data.get("run") or {}
        return cls(
            kind=data["kind"],
            sources=tuple(data.get("sources", ())),
            encoder_spec=data.get("encoder_spec"),
            previous_snapshot_id=data.get("previous_snapshot_id"),
            run=RunInfo(run.get("dag_id"), run.get("run_id")),
            delta_watermark=data.get("delta_watermark", LOG_ORIGIN),
            partitions=data.get("partitions"),
            base_snapshot_id=data.get("base_snapshot_id"),
        )


_ALWAYS = {"encoder_spec", "previous_snapshot_id"}


def read_run_record(store: ObjectStore, snapshot_id: str) -> RunRecord:
    data = get_json(store, run_record_key(snapshot_id))
    if data is None:
        raise StageError(
            f"{run_record_key(snapshot_id)} is missing: plan the run (or compact) before this stage"
        )
    return RunRecord.from_json(data)


def find_run_record(store: ObjectStore, snapshot_id: str) -> RunRecord | None:
    data = get_json(store, run_record_key(snapshot_id))
    return None if data is None else RunRecord.from_json(data)


def write_run_record(store: ObjectStore, snapshot_id: str, record: RunRecord) -> RunRecord:
    """Write the record, keeping what an earlier attempt of this run already decided."""
    first = find_run_record(store, snapshot_id)
    if first is not None:
        record = replace(
            record,
            previous_snapshot_id=first.previous_snapshot_id,
            run=first.run if first.run != RunInfo() else record.run,
            delta_watermark=first.delta_watermark
            if record.kind == "compact"
            else record.delta_watermark,
        )
    put_json_if_changed(store, run_record_key(snapshot_id), record.to_json())
    return record


def write_encoder_info(store: ObjectStore, snapshot_id: str, info: EncoderInfo) -> None:
    put_json_if_changed(store, encoder_key(snapshot_id), asdict(info))


def read_encoder_info(store: ObjectStore, snapshot_id: str) -> EncoderInfo:
    data = get_json(store, encoder_key(snapshot_id))
    if data is None:
        raise StageError(f"{snapshot_id}: no embedded partition yet ({encoder_key(snapshot_id)})")
    return EncoderInfo(**data)


def is_permanent(error: BaseException) -> bool:
    """Would running the stage again fail the same way? Bad input, a spec that fits no
    budget, a failed recall gate, a stage run out of order, a missing object, weights that
    are nowhere: yes. A store or network error (also one an error was raised from: weights
    the hub could not be reached for), a lost compare-and-swap, memory: maybe not (retry
    those)."""
    from vsearch.catalog import PublishConflict, SnapshotNotFound, VerificationError
    from vsearch.encoders.encoder_base import EncoderUnavailable
    from vsearch.index.train import GpuUnavailable
    from vsearch.stages.transient import is_network_error
    from vsearch.storage import ObjectNotFound

    if isinstance(error, PublishConflict | MemoryError | OSError) or is_network_error(error):
        return False
    return isinstance(
        error,
        ValueError
        | StageError
        | ObjectNotFound
        | SnapshotNotFound
        | VerificationError
        | GpuUnavailable
        | EncoderUnavailable,
    )
