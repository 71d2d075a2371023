"""The index stage: spec selection, training, shard build, recall validation, publish.

Each step is one function taking the store and the snapshot id and returning
JSON-able values (object keys, a ShardInfo's fields), so Airflow can pass them
through XCom; arrays never travel. faiss is imported inside the functions:
importing this package stays cheap for the CLI and DAG parsing.

    train_index(store, sid, options)          -> "indexes/{sid}/trained.index"
    build_shard(store, sid, shard, nshards)   -> {uri, sha256, bytes, ntotal, id_range}
    validate_snapshot(store, sid, ...)        -> "indexes/{sid}/report.json"  (or RecallGateFailed)
    build_manifest(store, sid, ...)           -> Manifest  (catalog.publish_snapshot moves CURRENT)
"""

from __future__ import annotations

from vsearch.index.assemble import (
    build_manifest,
    created_at_for,
    previous_snapshot_for,
)
from vsearch.index.options import IndexOptions, IndexOverrides
from vsearch.index.report import (
    REPORT_VERSION,
    ReportError,
    ValidationReport,
    format_report,
    read_report,
    write_report,
)
from vsearch.index.shard_build import DuplicateIds, build_shard
from vsearch.index.spec import IndexSpec, SpecError, choose_spec, spec_from_factory
from vsearch.index.structure import search_params
from vsearch.index.train import GpuUnavailable, train_index
from vsearch.index.trained_record import TrainedRecord, TrainedRecordError, read_trained_record
from vsearch.index.validate import RecallGateFailed, validate_snapshot, write_text_queries

__all__ = [
    "REPORT_VERSION",
    "DuplicateIds",
    "GpuUnavailable",
    "IndexOptions",
    "IndexOverrides",
    "IndexSpec",
    "RecallGateFailed",
    "ReportError",
    "SpecError",
    "TrainedRecord",
    "TrainedRecordError",
    "ValidationReport",
    "build_manifest",
    "build_shard",
    "choose_spec",
    "created_at_for",
    "format_report",
    "previous_snapshot_for",
    "read_report",
    "read_trained_record",
    "search_params",
    "spec_from_factory",
    "train_index",
    "validate_snapshot",
    "write_report",
    "write_text_queries",
]
