"""The partition worker: vectors in the store, failures with reasons, reruns that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.embedding import images
from vsearch import ids, stages
from vsearch.embedding.partitions import partition_keys, read_partition, read_record
from vsearch.embedding.worker import embed_partition
from vsearch.encoders import Encoder, load_encoder
from vsearch.imaging import decode_image
from vsearch.sources import FAILED, Item
from vsearch.sources.samples import write_sample_images
from vsearch.storage import ObjectStore

SNAP = "20260101T000000Z"


@pytest.fixture
def encoder(tiny_clip_dir: Path) -> Encoder:
    return load_encoder(f"clip:{tiny_clip_dir}", device="cpu")


def _items() -> list[Item]:
    good = [Item(f"good/{i}", images.jpeg(50 + i, 40, seed=i), f"c{i}", {"n": i}) for i in range(7)]
    bad = [
        Item("bad/truncated", images.truncated_jpeg(), None, {}),
        Item("bad/bomb", images.png_bomb(), None, {}),
        Item("bad/empty", b"", None, {}),
        Item("bad/html", b"<html></html>", None, {}),
        Item("bad/upstream", b"", None, {FAILED: "fetch:http-404"}),
        Item("good/3", images.jpeg(seed=99), "same key again", {}),
    ]
    return good[:4] + bad + good[4:]


def _listing(store: ObjectStore) -> dict[str, str]:
    return {info.key: info.etag for info in store.list("embeddings/")}


def test_vectors_ids_metadata_and_failures(store: ObjectStore, encoder: Encoder) -> None:
    items = _items()
    record = embed_partition(store, SNAP, 3, items, encoder, batch_size=3, num_workers=2)
    assert (record.count, record.failures, record.dim) == (7, 6, encoder.dim)
    xb, got_ids, meta = read_partition(store, SNAP, 3)
    good = [i for i in items if i.key.startswith("good/") and i.caption != "same key again"]
    assert [m["key"] for m in meta] == [i.key for i in good]  # input order kept
    assert got_ids.tolist() == [ids.item_id(i.key) for i in good]
    assert meta[0] == {"id": ids.item_id("good/0"), "key": "good/0", "caption": "c0", "n": 0}
    expected = encoder.encode_images([decode_image(i.data) for i in good])
    np.testing.assert_allclose(xb, expected, atol=1e-5)
    failures = [json.loads(x) for x in store.get(partition_keys(SNAP, 3).failures).splitlines()]
    assert {f["key"]: f["reason"] for f in failures} == {
        "bad/truncated": "truncated",
        "bad/bomb": "too-many-pixels",
        "bad/empty": "empty",
        "bad/html": "unidentified",
        "bad/upstream": "fetch:http-404",
        "good/3": "duplicate-key",
    }
    assert record.stats["failed_by_reason"]["truncated"] == 1


def test_rerun_of_a_finished_partition_writes_nothing(store: ObjectStore, encoder: Encoder) -> None:
    items = _items()
    first = embed_partition(store, SNAP, 0, items, encoder, batch_size=4)
    before = _listing(store)
    assert len(before) == 8  # the partition's seven objects and its by-input pointer
    again = embed_partition(store, SNAP, 0, items, encoder, batch_size=4)
    assert again == first and _listing(store) == before
    # An iterator (no fingerprint up front) is embedded again, but nothing is written.
    assert embed_partition(store, SNAP, 0, iter(items), encoder) == first
    assert _listing(store) == before
    # Other input: the partition is redone.
    changed = embed_partition(store, SNAP, 0, items[:3], encoder)
    assert changed.count == 3 and _listing(store) != before


def test_id_collisions_are_reported_not_merged(
    store: ObjectStore, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 63-bit hash does not collide on test-sized inputs: swap in a 1-bit one to make it.
    monkeypatch.setattr(ids, "item_id", lambda key: len(key) % 2)
    items = [Item(k, images.jpeg(seed=n), None, {}) for n, k in enumerate(["ab", "cd", "e"])]
    record = embed_partition(store, SNAP, 0, items, encoder)
    assert record.count == 2 and record.failures == 1
    failures = store.get(partition_keys(SNAP, 0).failures).decode()
    assert '"key": "cd"' in failures and '"reason": "id-collision"' in failures


def test_the_embed_stage_takes_a_planned_task_through_json(
    store: ObjectStore, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    write_sample_images(tmp_path / "photos", 12)
    uri = str(tmp_path / "photos")
    tasks = stages.plan(store, SNAP, [uri], partition_size=5, encoder=f"clip:{tiny_clip_dir}")
    task = json.loads(json.dumps(tasks[1]))  # as it comes out of XCom
    result = stages.embed(store, SNAP, task, batch_size=4)
    assert json.loads(json.dumps(result)) == result
    assert result["partition"] == 1 and result["count"] == 5
    assert result["key"] == partition_keys(SNAP, 1).record
    record = read_record(store, SNAP, 1)
    assert record is not None and record.encoder_id.startswith("clip:")
    before = _listing(store)
    again = stages.embed(store, SNAP, task)
    assert again == result and _listing(store) == before
