"""report.json as a typed, versioned ValidationReport: it round-trips to the same bytes,
reports written before it had a version still read (and are reused by a rerun), a
malformed one names the field, and ``format_report`` prints what the CLI printed."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.index.snapshots import SID, captions, encoder, lineage, write_snapshot
from vsearch.delta.watermarks import LOG_ORIGIN
from vsearch.index import (
    build_manifest,
    build_shard,
    train_index,
    validate_snapshot,
    write_text_queries,
)
from vsearch.index.layout import report_key
from vsearch.index.report import (
    REPORT_VERSION,
    Gate,
    ReportError,
    ValidationReport,
    format_report,
    read_report,
    write_report,
)
from vsearch.index.structure import faiss_threads
from vsearch.storage import LocalStore, ObjectNotFound, put_json

EXACT = "20260302T000000Z"  # 80 vectors: an exact index, no text queries, no recall@100


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    """Two validated snapshots: IVF-PQ with caption queries, and a tiny exact one."""
    store = LocalStore(tmp_path_factory.mktemp("report") / "store")
    with faiss_threads(1):
        write_snapshot(store, SID, n=2000)
        write_text_queries(store, SID, captions(50))
        train_index(store, SID, nq=100, memory_floor_mb=0)  # the compressed shape
        build_shard(store, SID, 0, 1)
        validate_snapshot(store, SID, target_recall=0.8)
        write_snapshot(store, EXACT, n=80)
        train_index(store, EXACT, nq=20)
        build_shard(store, EXACT, 0, 1)
        validate_snapshot(store, EXACT, target_recall=0.8)
    yield store


def stored(store: LocalStore, snapshot_id: str = SID) -> dict[str, Any]:
    return dict(json.loads(store.get(report_key(snapshot_id))))


@pytest.mark.parametrize("snapshot_id", [SID, EXACT])
def test_report_round_trips_through_report_json(
    validated: LocalStore, snapshot_id: str, tmp_path: Path
) -> None:
    raw = validated.get(report_key(snapshot_id))
    report = read_report(validated, snapshot_id)
    assert report.version == REPORT_VERSION == json.loads(raw)["version"]
    assert report.to_json() == raw
    assert ValidationReport.from_json(raw) == report
    assert ValidationReport.from_dict(report.to_dict()) == report
    elsewhere = LocalStore(tmp_path / "other")
    assert write_report(elsewhere, report) == report_key(snapshot_id)
    assert elsewhere.get(report_key(snapshot_id)) == raw
    assert read_report(elsewhere, snapshot_id) == report


def test_fields_read_by_name(validated: LocalStore) -> None:
    report = read_report(validated, SID)
    assert report.gate.passed and report.spec.nlist and report.metric == "ip"
    assert report.queries.image_to_image == 100 and report.queries.text_to_image == 50
    nprobes = [p.nprobe for p in report.curve]
    assert nprobes == sorted(nprobes) and report.default_nprobe in nprobes
    assert report.sweep.text_to_image is not None
    assert [p.nprobe for p in report.sweep.image_to_image] == nprobes
    assert report.recall.image_to_image.recall_at_100 is not None
    assert report.ntotal == sum(s.ntotal for s in report.shards) == 2000


def test_kinds_not_measured_are_left_out(validated: LocalStore) -> None:
    """No caption queries: no text_to_image in queries or sweep, a null recall; fewer
    than 101 vectors: no recall@100. Decoding must not put them back."""
    data, report = stored(validated, EXACT), read_report(validated, EXACT)
    assert report.spec.nlist is None and report.curve == () and report.gate.passed
    assert "text_to_image" not in data["queries"] and "text_to_image" not in data["sweep"]
    assert data["recall"]["text_to_image"] is None
    assert "recall@100" not in data["recall"]["image_to_image"]
    assert report.sweep.text_to_image is None and report.recall.text_to_image is None
    assert report.recall.image_to_image.recall_at_100 is None
    assert report.to_dict() == data


def test_a_report_without_version_reads_as_version_1_and_is_reused(validated: LocalStore) -> None:
    key = report_key(SID)
    before = validated.get(key)
    old = stored(validated)
    del old["version"]
    try:
        put_json(validated, key, old)
        report = read_report(validated, SID)
        assert report.version == 1 and report == ValidationReport.from_json(before)
        # A retried task with the same inputs reuses it as it is: not rewritten.
        assert validate_snapshot(validated, SID, target_recall=0.8) == key
        assert json.loads(validated.get(key)) == old
    finally:
        validated.put(key, before)


def mutate(path: str, value: Any) -> Any:
    """A function that sets (or, for ``...``, deletes) ``path`` in a report dict."""

    def apply(data: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
        node: Any = data
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return apply


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (mutate("gate/reason", ...), "report.gate.reason", "missing field"),
        (mutate("gate/passed", "yes"), "report.gate.passed", "expected bool, got str"),
        (mutate("ntotal", 2000.0), "report.ntotal", "expected int, got float"),
        (
            mutate("sweep/image_to_image/1/2", "0.9"),
            "report.sweep.image_to_image[1][2]",
            "expected float, got str",
        ),
        (
            mutate("curve/0", [1, 0.5]),
            "report.curve[0]",
            "expected a list [nprobe, recall_at_10, ms_per_query], got 2 items",
        ),
        (mutate("shards/0/id_range", [1]), "report.shards[0].id_range", "expected 2 items, got 1"),
        (
            mutate("spec/metric", "cosine"),
            "report.spec.metric",
            "expected one of ['ip', 'l2'], got 'cosine'",
        ),
        (
            mutate("recall/image_to_image/recall@5", 0.5),
            "report.recall.image_to_image.recall@5",
            "unknown field",
        ),
        (mutate("version", 2), "report.version", "this vsearch reads report version 1, got 2"),
    ],
)
def test_a_malformed_report_names_the_field(
    validated: LocalStore, change: Any, field: str, message: str, tmp_path: Path
) -> None:
    data = stored(validated)
    change(data)
    with pytest.raises(ReportError, match=f"^{re.escape(f'{field}: {message}')}$") as e:
        ValidationReport.from_dict(data)
    assert e.value.field == field
    # Read from the store, the error also names the object.
    elsewhere = LocalStore(tmp_path / "store")
    put_json(elsewhere, report_key(SID), data)
    where = f"{field}: {message} (in {report_key(SID)})"
    with pytest.raises(ReportError, match=f"^{re.escape(where)}$"):
        read_report(elsewhere, SID)


def test_not_json_and_missing_reports(validated: LocalStore, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"^report: not valid JSON"):
        ValidationReport.from_json(b"{")
    with pytest.raises(
        ObjectNotFound,
        match=rf"^{SID} has no indexes/{SID}/report\.json; validate the snapshot first$",
    ):
        read_report(LocalStore(tmp_path / "empty"), SID)


def lines_the_cli_printed(report: dict[str, Any]) -> list[str]:
    """``_print_report`` of vsearch/cli/build_commands.py before the move, over report.json's
    dict."""
    sizes, out = report["sizes"], []
    out.append(f"{report['snapshot_id']}: {report['spec']['factory']}, {report['ntotal']} vectors")
    out.append(
        f"  bytes/vector: {sizes['resident_bytes_per_vector']} resident, "
        f"{sizes['refine_bytes_per_vector']} re-ranking (may stay on disk)"
    )
    out.append("  nprobe  " + "  ".join(f"{k[:5]}@10    ms" for k in report["sweep"]))
    for row in zip(*report["sweep"].values(), strict=True):
        cells = "  ".join(f"{r10:8.4f} {ms:6.3f}" for _, _, r10, ms in row)
        out.append(f"  {row[0][0]:6d}  {cells}")
    for kind, r in report["recall"].items():
        if r is not None:
            out.append(f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in r.items()))
    gate = report["gate"]
    out.append(
        f"  default nprobe {report['default_nprobe']}; gate "
        f"{'passed' if gate['passed'] else 'FAILED'}: {gate['reason']}"
    )
    return out


@pytest.mark.parametrize("snapshot_id", [SID, EXACT])
def test_format_report_prints_the_lines_the_cli_printed(
    validated: LocalStore, snapshot_id: str
) -> None:
    report = read_report(validated, snapshot_id)
    lines = format_report(report)
    assert lines == lines_the_cli_printed(stored(validated, snapshot_id))
    if snapshot_id == SID:
        assert lines[2] == "  nprobe  image@10    ms  text_@10    ms"
        assert len(lines) == 3 + len(report.curve) + 2 + 1
        assert lines[3].startswith("       1    0.")
    else:
        assert lines[2] == "  nprobe  image@10    ms"
        assert lines[3].startswith("       0  ")  # an exact index has no nprobe
    assert (
        lines[-1] == f"  default nprobe {report.default_nprobe}; gate passed: {report.gate.reason}"
    )


def test_format_report_of_a_failed_gate(validated: LocalStore) -> None:
    report = read_report(validated, SID)
    failed = dataclasses.replace(report, gate=Gate(False, "recall@10 below 0.99 for text_to_image"))
    lines = format_report(failed)
    assert lines == lines_the_cli_printed(failed.to_dict())
    assert lines[-1].endswith("gate FAILED: recall@10 below 0.99 for text_to_image")


def test_build_manifest_reads_the_report_by_field(validated: LocalStore) -> None:
    report = read_report(validated, SID)
    manifest = build_manifest(validated, SID, encoder=encoder(), lineage=lineage(2000))
    assert manifest.index.default_nprobe == report.default_nprobe
    assert manifest.index.factory == report.spec.factory
    assert manifest.recall.image_to_image_at_10 == report.recall.image_to_image.recall_at_10
    assert manifest.recall.curve == tuple(
        (p.nprobe, p.recall_at_10, p.ms_per_query) for p in report.curve
    )
    assert [s.sha256 for s in manifest.shards] == [s.sha256 for s in report.shards]
    assert manifest.delta_watermark == LOG_ORIGIN
