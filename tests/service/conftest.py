"""Fixtures of the query-service tests: apps built by the real factory, a test encoder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask

from service.app import close_app, create_app
from tests.fixtures.snapshots import SYNTHETIC_ENCODER
from tests.index.snapshots import SID, planned
from vsearch import stages
from vsearch.catalog import read_current
from vsearch.manifest import EncoderInfo, Manifest
from vsearch.storage import LocalStore, ObjectStore

API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}


class HashEncoder:
    """A small deterministic in-process encoder with the protocol of vsearch.encoders.encoder_base.

    Texts map to a unit vector seeded by their sha256; images to their 8x8 grey
    thumbnail, centred and normalised. Same input, same vector, in any process.
    """

    has_text = True

    def __init__(self, info: EncoderInfo = SYNTHETIC_ENCODER) -> None:
        self.info = info
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def encoder_id(self) -> str:
        return f"{self.info.name}@{self.info.revision}#hash"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype("float32")
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        self.calls += 1
        out = []
        for im in images:
            g = np.asarray(im.convert("L").resize((8, 8)), "float32").ravel()
            g = g - g.mean()
            norm = np.linalg.norm(g)
            out.append(g / norm if norm else np.full(self.dim, self.dim**-0.5, "float32"))
        return np.stack(out).astype("float32")


@pytest.fixture
def local_store(tmp_path: Path) -> ObjectStore:
    return LocalStore(tmp_path / "store")


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """``make_app(store, **config)``: an app on ``store`` with embedded defaults under tmp_path.

    Loads synchronously and runs no watcher unless WATCH_INTERVAL_S is given.
    """
    apps: list[Flask] = []

    def factory(store: ObjectStore, name: str = "a", **config: Any) -> Flask:
        base: dict[str, Any] = {
            "DATA_DIR": str(tmp_path / f"data-{name}"),
            "STORE_OBJECT": store,
            "STORE": "unused",
            "API_KEY": API_KEY,
            "WATCH_INTERVAL_S": 0,
            "LOAD_ON_START": "sync",
            "TESTING": True,
            "REPLICA_ID": name,
        }
        base.update(config)
        app = create_app(base)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        close_app(app)


def vector_query(client: Any, x: np.ndarray, **extra: Any) -> Any:
    return client.post("/v1/search", json={"vector": [float(v) for v in x], **extra})


@dataclass(frozen=True)
class BuiltSnapshot:
    store: ObjectStore
    manifest: Manifest
    xb: np.ndarray
    ids: np.ndarray


@pytest.fixture(scope="session")
def built_snapshot(tmp_path_factory: pytest.TempPathFactory) -> BuiltSnapshot:
    """A snapshot built and published by the real stages in the spec large collections get
    on defaults (IDMap,OPQ,IVF,PQ..x4fsr,Refine(SQ8)), 2 shards, from 6,000 clustered
    vectors: without the memory floor, which gives so few vectors an exact index.

    Built once per session: tests only read it (apps keep their delta under their own
    data dir), so they must not publish into its store.
    """
    from vsearch.index.structure import faiss_threads

    root = tmp_path_factory.mktemp("built-snapshot")
    store = LocalStore(root / "store")
    xb, ids = planned(store, root / "vectors", n=6000)
    with faiss_threads(1):
        stages.build_index(
            store, SID, train_options={"nshards": 2, "memory_floor_mb": 0},
            validate_options={"target_recall": 0.9, "nq": 200},
        )  # fmt: skip
    manifest = read_current(store)
    assert manifest is not None
    return BuiltSnapshot(store, manifest, xb, ids)
