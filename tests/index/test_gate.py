"""The recall gate: a starved index fails validation and CURRENT does not move."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.index.snapshots import SID, D, planned, write_snapshot
from vsearch import stages
from vsearch.catalog import list_snapshots, read_pointer
from vsearch.index import (
    RecallGateFailed,
    build_shard,
    train_index,
    validate_snapshot,
    write_text_queries,
)
from vsearch.index.layout import report_key
from vsearch.index.synthetic import text_queries
from vsearch.storage import ObjectNotFound, ObjectStore

NEWER = "20260302T000000Z"
# Two 4-bit sub-quantizers for 32 dimensions, no re-ranking: one byte per vector
# cannot rank neighbours, whatever nprobe.
STARVED = "IVF16,PQ2x4fs"


def test_starved_spec_fails_the_gate_and_current_stays(store: ObjectStore, tmp_path: Path) -> None:
    planned(store, tmp_path / "first", n=4000)
    good = stages.build_index(
        store, SID, train_options={"nq": 200}, validate_options={"target_recall": 0.9}
    )
    assert good["moved"] and read_pointer(store) is not None

    planned(store, tmp_path / "newer", NEWER, n=4000, seed=1)
    train_index(store, NEWER, factory=STARVED, nq=200)
    build_shard(store, NEWER, 0, 1)
    with pytest.raises(RecallGateFailed, match=r"no nprobe up to 16 reaches recall@10 0\.9"):
        validate_snapshot(store, NEWER, target_recall=0.9)
    report = json.loads(store.get(report_key(NEWER)))  # written, for the post-mortem
    assert not report["gate"]["passed"]
    assert max(r for _, r, _ in report["curve"]) < 0.5
    # A retry of the task fails the same way without measuring again...
    with pytest.raises(RecallGateFailed):
        validate_snapshot(store, NEWER, target_recall=0.9)
    # ...and publishing is refused before anything is written.
    with pytest.raises(RecallGateFailed):
        stages.publish(store, NEWER)
    pointer = read_pointer(store)
    assert pointer is not None and pointer[0].snapshot_id == SID
    assert list_snapshots(store) == [SID]


def test_text_queries_are_gated_too(store: ObjectStore) -> None:
    """Caption queries that miss the target fail the gate even when image queries pass."""
    write_snapshot(store, SID, n=4000)
    train_index(store, SID, factory="IVF16,PQ4x4fs,RFlat", nq=200)
    build_shard(store, SID, 0, 1)
    with pytest.raises(ObjectNotFound, match="no text queries"):
        validate_snapshot(store, SID, require_text=True)
    # Captions far off the image cone (a wide modality gap) land in the wrong IVF
    # list more often than image queries do: at nprobe=1 only they miss 0.8.
    write_text_queries(store, SID, text_queries(100, D, nclusters=48, seed=0, gap=2.0))
    with pytest.raises(RecallGateFailed, match=r"reaches recall@10 0.8 for text_to_image \(see"):
        validate_snapshot(store, SID, target_recall=0.8, max_nprobe=1, require_text=True)
    report = json.loads(store.get(report_key(SID)))
    assert report["queries"]["text_to_image"] == 100
    assert report["recall"]["image_to_image"]["recall@10"] >= 0.8
    assert report["recall"]["text_to_image"]["recall@10"] < 0.8
