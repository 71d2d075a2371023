"""A user's first hour, on real photos of odd sizes: ``vsearch index FOLDER`` with no flags
(the console script, as a subprocess), then the service ``vsearch serve`` runs answers an
uploaded photo — the encoder comes from the snapshot, no setting needed — and finds the
photo itself first. Precomputed embeddings go in through the same command."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from tests.conftest import SHARED_DATA
from tests.dags.test_local_airflow import upload
from vsearch.catalog import read_current
from vsearch.cli.service_process import running_service, settings_env
from vsearch.config import Settings
from vsearch.storage import open_store

VSEARCH = str(Path(sys.executable).with_name("vsearch"))


def vsearch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSEARCH_")}
    return subprocess.run([VSEARCH, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_index_a_folder_of_photos_on_defaults_then_search_by_upload(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    with tarfile.open(SHARED_DATA / "coco256-000.tar") as tar:
        jpgs = [m for m in tar.getmembers() if m.name.endswith(".jpg")][:40]
        for m in jpgs:
            (photos / Path(m.name).name).write_bytes(tar.extractfile(m).read())  # type: ignore[union-attr]
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")

    out = vsearch(tmp_path, "index", "photos")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "embedded: 40 items, 1 failed" in out.stdout
    assert "gate passed" in out.stdout and "CURRENT ->" in out.stdout
    assert "item/s" in out.stderr  # the progress bar

    settings = Settings.load(environ={}, data_dir=str(tmp_path / "vsearch-data"))
    live = read_current(open_store(settings=settings))
    assert live is not None and live.ntotal == 40 and live.lineage.failures == 1
    query = sorted(photos.glob("*.jpg"))[3]
    with running_service(settings_env(settings)) as base:  # what `vsearch serve` starts
        hits = upload(base, query.read_bytes())
    assert hits[0]["metadata"]["key"] == query.name and hits[0]["score"] > 0.99

    again = vsearch(tmp_path, "index", "photos", "--snapshot", live.snapshot_id)
    assert again.returncode == 0 and "already current" in again.stdout  # a rerun is free


def test_index_precomputed_embeddings(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((300, 16)).astype("float32")
    np.save(tmp_path / "emb.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    out = vsearch(tmp_path, "index", "emb.npy", "--target-recall", "0.9")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "encoder none (precomputed vectors)" in out.stdout
    assert "embedded: 300 items, 0 failed" in out.stdout and "CURRENT ->" in out.stdout
