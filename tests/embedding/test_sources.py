"""Sources: a directory, real tar shards from ../shared/data, a store prefix, an S3 prefix."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.embedding import images
from tests.embedding.conftest import shared_file
from vsearch.config import Settings
from vsearch.sources import FAILED, SourceError, open_source
from vsearch.sources.samples import CLASSES, write_sample_images
from vsearch.sources.webdataset import write_shard
from vsearch.storage import ObjectStore


def test_directory_of_images_with_sidecars(tmp_path: Path) -> None:
    paths = write_sample_images(tmp_path / "photos", 20)
    (tmp_path / "photos" / "notes.md").write_text("not an image")
    source = open_source(str(tmp_path / "photos"), partition_size=8)
    specs = source.partitions()
    assert [s["index"] for s in specs] == [0, 1, 2]
    assert json.loads(json.dumps(specs)) == specs  # JSON-able, for XCom
    items = [item for spec in specs for item in source.items(spec)]
    assert len(items) == 20 and len({i.key for i in items}) == 20
    first = next(i for i in items if i.key == "red-disc/00000.jpg")
    assert first.data == paths[0].read_bytes()
    assert first.caption == "a red disc"
    assert first.metadata == {"label": "red-disc", "sample": 0}
    assert {i.metadata["label"] for i in items} == set(CLASSES)


def test_directory_changed_after_listing_is_refused(tmp_path: Path) -> None:
    write_sample_images(tmp_path, 4)
    source = open_source(str(tmp_path))
    spec = source.partitions()[0]
    write_sample_images(tmp_path / "more", 1)
    fresh = open_source(str(tmp_path))
    with pytest.raises(SourceError, match="listing changed"):
        list(fresh.items(spec))


def test_shared_cifar_tar_shard() -> None:
    path = shared_file("cifar10-test-000.tar")
    source = open_source(str(path))
    (spec,) = source.partitions()
    assert spec["kind"] == "tar" and spec["name"] == "cifar10-test-000.tar"
    items = list(source.items(spec))
    assert len(items) == 10_000
    first = items[0]
    assert first.key == "cifar10-test-000/000000"
    assert first.caption == "a photo of a airplane"
    assert first.metadata["label"] == "airplane"
    assert first.data[:2] == b"\xff\xd8"  # a JPEG
    assert len({i.key for i in items}) == 10_000


def test_glob_of_tar_shards_one_partition_each() -> None:
    data = shared_file("cifar10-test-000.tar").parent
    source = open_source(str(data / "cifar10-train-00[0-2].tar"))
    assert [s["name"] for s in source.partitions()] == [
        f"cifar10-train-00{i}.tar" for i in range(3)
    ]


def test_missing_paths_and_empty_dirs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does the path exist"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="no images or tar shards"):
        open_source(str(tmp_path)).partitions()
    with pytest.raises(SourceError, match="needs the project's store"):
        open_source("store:images/x/")


def _tar_with_bad_samples() -> bytes:
    good = images.jpeg(32, 32)
    shard = write_shard(
        [
            ("a", good, "first", {"n": 1}),
            ("b", images.truncated_jpeg(), "second", {"n": 2}),
            ("c", good, None, {"n": 3}),
        ]
    )
    # a sample with only a caption: no image at all
    buf = io.BytesIO(shard)
    with tarfile.open(fileobj=buf, mode="a") as tar:
        info = tarfile.TarInfo("d.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"lost"))
    return buf.getvalue()


def test_store_prefix_of_tar_shards(store: ObjectStore) -> None:
    store.put("images/mine/00000.tar", _tar_with_bad_samples())
    store.put("images/mine/00001.tar", write_shard([("e", images.jpeg(), "x", {})]))
    store.put("images/mine/00000.stats.json", b"{}")  # not a shard: ignored
    source = open_source("store:images/mine/", store=store)
    specs = source.partitions()
    assert [s["name"] for s in specs] == ["00000.tar", "00001.tar"]
    items = list(source.items(specs[0]))
    assert [i.key for i in items] == ["00000/a", "00000/b", "00000/c", "00000/d"]
    assert items[2].caption is None and items[3].data == b""
    assert items[3].metadata[FAILED] == "no-image-in-sample"
    assert source.fingerprint(specs[0]) == source.fingerprint(specs[0])
    assert source.fingerprint(specs[0]) != source.fingerprint(specs[1])
    single = open_source("store:images/mine/00001.tar", store=store)
    assert [i.key for s in single.partitions() for i in single.items(s)] == ["00001/e"]


def test_s3_prefix_of_images(s3_endpoint: str) -> None:
    from tests.conftest import make_s3_store

    bucket_store = make_s3_store(s3_endpoint)  # rooted at "vs/" in its bucket
    for i in range(5):
        bucket_store.put(f"raw/img{i}.jpg", images.jpeg(seed=i))
    bucket_store.put("raw/img0.txt", b"a caption")
    settings = Settings.load(s3_endpoint_url=s3_endpoint)
    source = open_source(f"s3://{bucket_store.bucket}/vs/raw/", settings=settings, partition_size=3)
    specs = source.partitions()
    assert [(s["start"], s["stop"]) for s in specs] == [(0, 3), (3, 5)]
    items = [i for s in specs for i in source.items(s)]
    assert [i.key for i in items] == [f"img{i}.jpg" for i in range(5)]
    assert items[0].caption == "a caption" and items[1].caption is None
    assert items[4].data == images.jpeg(seed=4)
