"""What the snapshots pages show, read from the object store: a row per published
snapshot, and the detail of one (manifest, validation report, run record).

The manifest is the contract and must read; the report (``indexes/{id}/report.json``)
and the run record (``indexes/{id}/build.json``) only add to the page, so one that is
missing or unreadable is left out, with a warning in the API server's log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vsearch.catalog import list_snapshots, read_manifest, read_pointer
from vsearch.index.layout import report_key
from vsearch.index.report import ReportError, ValidationReport, read_report
from vsearch.manifest import Manifest, ManifestError
from vsearch.stages.run_records import RunRecord, find_run_record
from vsearch.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def current_snapshot_id(store: ObjectStore) -> str | None:
    found = read_pointer(store)
    return found[0].snapshot_id if found else None


def snapshot_status(snapshot_id: str, current: str | None) -> str:
    """live (CURRENT names it), newer (published but CURRENT not moved: a backfill
    refused a rollback, or it awaits a forced publish) or superseded."""
    if snapshot_id == current:
        return "live"
    return "newer" if current and snapshot_id > current else "superseded"


def snapshot_row(snapshot_id: str, status: str, m: Manifest) -> dict[str, Any]:
    return {
        "snapshot_id": snapshot_id,
        "status": status,
        "vectors": m.ntotal,
        "shards": len(m.shards),
        "bytes": sum(s.bytes for s in m.shards),
        "image_to_image@10": m.recall.image_to_image_at_10,
        "text_to_image@10": m.recall.text_to_image_at_10,
        "encoder": f"{m.encoder.name}:{m.encoder.model_id}",
        "factory": m.index.factory,
        "delta_watermark": m.delta_watermark,
        "run_id": m.lineage.run_id,
    }


def snapshot_rows(store: ObjectStore) -> list[dict[str, Any]]:
    """One row per published snapshot, newest first (also the JSON API's answer). A
    manifest this vsearch cannot read (a newer schema, during an upgrade) is a row with
    status "unreadable" and the reason, not an error page."""
    current = current_snapshot_id(store)
    rows = []
    for sid in reversed(list_snapshots(store)):
        try:
            rows.append(snapshot_row(sid, snapshot_status(sid, current), read_manifest(store, sid)))
        except ManifestError as e:
            rows.append({"snapshot_id": sid, "status": "unreadable", "error": str(e)})
    return rows


@dataclass(frozen=True)
class SnapshotDetail:
    manifest: Manifest
    status: str
    report: ValidationReport | None
    record: RunRecord | None

    @property
    def curve(self) -> tuple[tuple[int, float, float], ...]:
        """[(nprobe, recall@10, ms/query)], from the report, else from the manifest."""
        if self.report is not None:
            return tuple((p.nprobe, p.recall_at_10, p.ms_per_query) for p in self.report.curve)
        return self.manifest.recall.curve

    @property
    def curve_source(self) -> str:
        if self.report is not None:
            return report_key(self.manifest.snapshot_id)
        return "the manifest's recall.curve (no validation report)"


def _optional_report(store: ObjectStore, snapshot_id: str) -> ValidationReport | None:
    try:
        return read_report(store, snapshot_id)
    except ObjectNotFound:
        return None
    except (ReportError, ValueError) as e:  # a wrong field, or not JSON at all
        log.warning("%s: report unreadable, showing the manifest's curve: %s", snapshot_id, e)
        return None


def _optional_record(store: ObjectStore, snapshot_id: str) -> RunRecord | None:
    try:
        return find_run_record(store, snapshot_id)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # malformed JSON or fields
        log.warning("%s: run record unreadable, left out: %r", snapshot_id, e)
        return None


def load_detail(store: ObjectStore, snapshot_id: str) -> SnapshotDetail:
    """The snapshot's detail; SnapshotNotFound when no manifest has that id."""
    manifest = read_manifest(store, snapshot_id)
    return SnapshotDetail(
        manifest=manifest,
        status=snapshot_status(snapshot_id, current_snapshot_id(store)),
        report=_optional_report(store, snapshot_id),
        record=_optional_record(store, snapshot_id),
    )
