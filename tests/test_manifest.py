"""The manifest contract: strict round trip, and errors that name the field."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fixtures.snapshots import build_synthetic_snapshot
from vsearch.manifest import Manifest, ManifestError, snapshot_id_for
from vsearch.storage import LocalStore


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    store = LocalStore(tmp_path_factory.mktemp("store"))
    return build_synthetic_snapshot(store, datetime(2026, 3, 1, tzinfo=UTC), n=300)


def test_round_trip(manifest: Manifest) -> None:
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.to_json() == manifest.to_json()
    assert isinstance(again.shards, tuple) and isinstance(again.shards[0].id_range, tuple)


def test_json_names_and_order_follow_the_contract(manifest: Manifest) -> None:
    data = json.loads(manifest.to_json())
    assert next(iter(data)) == "schema_version"
    assert set(data["recall"]) == {"image_to_image@10", "text_to_image@10", "curve"}
    assert data["shards"][0]["id_range"] == [0, 149]


def _broken(manifest: Manifest, edit: Any) -> dict[str, Any]:
    data = copy.deepcopy(manifest.to_dict())
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (lambda d: d.pop("metric"), "manifest.metric", "missing field"),
        (lambda d: d.update(colour="red"), "manifest.colour", "unknown field"),
        (lambda d: d["encoder"].pop("dim"), "manifest.encoder.dim", "missing field"),
        (lambda d: d["encoder"].update(dim="64"), "manifest.encoder.dim", "expected int, got str"),
        (lambda d: d["encoder"].update(dim=0), "manifest.encoder.dim", "must be > 0"),
        (
            lambda d: d["shards"][1].update(sha256="abc"),
            "manifest.shards[1].sha256",
            "64 lowercase",
        ),
        (
            lambda d: d["shards"][0].update(id_range=[1]),
            "manifest.shards[0].id_range",
            "expected 2",
        ),
        (lambda d: d["shards"][0].update(ntotal=True), "manifest.shards[0].ntotal", "got bool"),
        (lambda d: d.update(metric="cosine"), "manifest.metric", "expected one of"),
        (
            lambda d: d.update(schema_version=3),
            "manifest.schema_version",
            r"reads schemas \(1, 2\), got 3",
        ),
        (lambda d: d.update(snapshot_id="latest"), "manifest.snapshot_id", "YYYYMMDDTHHMMSSZ"),
        (lambda d: d.update(delta_watermark="12"), "manifest.delta_watermark", "ms-seq"),
        (
            lambda d: d["recall"].update(curve=[[1, "x", 0.1]]),
            "manifest.recall.curve[0][1]",
            "float",
        ),
        (lambda d: d.update(shards={}), "manifest.shards", "expected a list"),
    ],
)
def test_malformed_manifest_names_the_field(
    manifest: Manifest, edit: Any, field: str, reason: str
) -> None:
    with pytest.raises(ManifestError, match=reason) as err:
        Manifest.from_dict(_broken(manifest, edit))
    assert err.value.field == field


def test_not_json_at_all() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.from_json(b"{nope")


def test_snapshot_ids_sort_chronologically() -> None:
    ids = [
        snapshot_id_for(datetime(2026, m, d, h, tzinfo=UTC))
        for m, d, h in [(12, 1, 0), (1, 2, 0), (1, 10, 5), (1, 10, 23)]
    ]
    assert sorted(ids) == [ids[1], ids[2], ids[3], ids[0]]
    assert snapshot_id_for(datetime(2026, 1, 2, tzinfo=UTC), "c1") == "20260102T000000Z-c1"
    with pytest.raises(ValueError, match="timezone"):
        snapshot_id_for(datetime(2026, 1, 2))


def test_a_version_1_manifest_reads_as_one_without_thumbnails(manifest: Manifest) -> None:
    data = manifest.to_dict()
    assert data["schema_version"] == 2 and "thumbnails" in data
    old = {k: v for k, v in data.items() if k != "thumbnails"} | {"schema_version": 1}
    assert Manifest.from_dict(old).thumbnails is None
    with pytest.raises(ManifestError, match=r"manifest\.thumbnails: missing field"):
        Manifest.from_dict({k: v for k, v in data.items() if k != "thumbnails"})
    packs = {"packs": [], "count": 0}
    with pytest.raises(ManifestError, match="needs schema_version 2"):
        Manifest.from_dict(old | {"thumbnails": packs})
