"""Thumbnails: made by the partition worker from the decoded image, packed with a table,
read back one item at a time by a ranged read, checked by crc32."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.embedding import images
from vsearch.embedding import thumbnails
from vsearch.embedding.partitions import partition_keys, read_record, read_thumbnails
from vsearch.embedding.worker import embed_partition
from vsearch.encoders import Encoder, load_encoder
from vsearch.ids import item_id
from vsearch.sources import Item
from vsearch.storage import ObjectStore

SNAP = "20260101T000000Z"
# Odd sizes: a panorama, a tower, a tiny icon, a big photo, a PNG with alpha, EXIF-rotated.
ODD = {
    "wide": images.jpeg(1200, 90, seed=1),
    "tall": images.jpeg(70, 900, seed=2),
    "tiny": images.jpeg(24, 18, seed=3),
    "big": images.jpeg(2400, 1600, seed=4),
    "alpha": images.png(Image.new("RGBA", (300, 200), (200, 30, 30, 90))),
    "rotated": images.rotated_jpeg(),
}


@pytest.fixture
def encoder(tiny_clip_dir: Path) -> Encoder:
    return load_encoder(f"clip:{tiny_clip_dir}", device="cpu")


def test_every_embedded_item_gets_a_small_webp_thumbnail(
    store: ObjectStore, encoder: Encoder
) -> None:
    items = [Item(k, v, None, {}) for k, v in ODD.items()]
    items.append(Item("broken", images.truncated_jpeg(), None, {}))
    record = embed_partition(store, SNAP, 0, items, encoder, batch_size=4)
    assert record.count == len(ODD) and record.failures == 1
    thumbs = read_thumbnails(store, record)
    assert set(thumbs) == {item_id(k) for k in ODD}  # none for the item that failed
    for key, data in ODD.items():
        thumb = thumbs[item_id(key)]
        assert thumbnails.content_type(thumb) == "image/webp"
        assert len(thumb) < 12_000, key
        w, h = images.size_of(thumb)
        with Image.open(io.BytesIO(data)) as original:
            ow, oh = original.size
        if key == "rotated":  # EXIF orientation applied, like the embedding sees it
            ow, oh = oh, ow
        assert max(w, h) == min(thumbnails.THUMB_SIDE, max(ow, oh)), key
        assert abs(w / h - ow / oh) < 0.1 * ow / oh + 2 / min(w, h), (key, w, h, ow, oh)
    assert record.stats["thumbnails"] == len(ODD)


def test_one_thumbnail_is_one_ranged_read(store: ObjectStore, encoder: Encoder) -> None:
    items = [Item(k, v, None, {}) for k, v in ODD.items()]
    record = embed_partition(store, SNAP, 2, items, encoder)
    keys = partition_keys(SNAP, 2)
    pack_size = store.head(keys.thumbs).size
    table = thumbnails.check_table(
        thumbnails.read_table(store.get(keys.thumbs_table)), pack_size, keys.thumbs_table
    )
    merged = thumbnails.merge_tables([(0, table)])
    whole = read_thumbnails(store, record)
    for key in ODD:
        found = thumbnails.find(merged, item_id(key))
        assert found is not None
        _, offset, length, crc = found
        data = store.get_range(keys.thumbs, offset, length)
        assert thumbnails.checked(data, crc, key) == whole[item_id(key)]
    assert thumbnails.find(merged, item_id("not-there")) is None


def test_a_rerun_rewrites_no_thumbnail(store: ObjectStore, encoder: Encoder) -> None:
    items = [Item(k, v, None, {}) for k, v in ODD.items()]
    embed_partition(store, SNAP, 0, items, encoder)
    keys = partition_keys(SNAP, 0)
    before = {k: store.head(k).etag for k in (keys.thumbs, keys.thumbs_table)}
    embed_partition(store, SNAP, 0, items, encoder)
    assert {k: store.head(k).etag for k in before} == before
    # No thumbnails asked for: an empty pack, and the partition is redone (another input).
    record = embed_partition(store, SNAP, 0, items, encoder, thumb_side=0)
    assert read_thumbnails(store, record) == {} and record.count == len(ODD)


def test_pack_table_merge_and_corruption() -> None:
    pack, table = thumbnails.pack({9: b"nine", 3: b"three", 5: b""})
    assert table[:, 0].tolist() == [3, 5, 9]
    assert thumbnails.unpack(pack, table) == {3: b"three", 5: b"", 9: b"nine"}
    other_pack, other = thumbnails.pack({4: b"four", 9: b"NINE"})
    merged = thumbnails.merge_tables([(0, table), (1, other)])
    assert merged[:, 0].tolist() == [3, 4, 5, 9]
    pack_no, offset, length, _ = thumbnails.find(merged, 9) or (0, 0, 0, 0)
    assert (pack_no, other_pack[offset : offset + length]) == (1, b"NINE")  # later pack wins
    with pytest.raises(thumbnails.ThumbnailCorrupt):
        thumbnails.unpack(pack.replace(b"three", b"THREE"), table)
    for bad in (table[::-1], table + np.array([0, 100, 0, 0]), table.astype(np.int32)):
        with pytest.raises(ValueError):
            thumbnails.check_table(np.ascontiguousarray(bad), len(pack), "t")
    assert thumbnails.content_type(b"\xff\xd8\xff\xe0....") == "image/jpeg"
    assert thumbnails.content_type(b"<svg") == "application/octet-stream"


def test_a_partition_from_before_thumbnails_reads_as_none(
    store: ObjectStore, encoder: Encoder
) -> None:
    record = embed_partition(store, SNAP, 0, [Item("a", ODD["tiny"], None, {})], encoder)
    keys = partition_keys(SNAP, 0)
    old = {k: v for k, v in record.sha256.items() if ".thumbs" not in k}
    assert read_thumbnails(store, type(record)(**{**record.__dict__, "sha256": old})) == {}
    assert read_record(store, SNAP, 0) == record and store.exists(keys.thumbs)
