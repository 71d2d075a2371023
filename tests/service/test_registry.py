"""Snapshot registry: loading from local and S3 stores, refusals, leases across swaps, IVF."""

from __future__ import annotations

import os
import time
from typing import Any

import faiss
import numpy as np
import pytest

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AUTH, AppFactory, vector_query
from vsearch.catalog import CURRENT_KEY, rollback
from vsearch.manifest import EncoderInfo
from vsearch.storage import ObjectStore

D = 64


def flat_snapshot(store: ObjectStore, day: int, n: int = 200, **kw: Any) -> Any:
    xb = sample_vectors(n, D, seed=day)
    ids = np.arange(n, dtype="int64") + day * 1_000_000
    m = build_snapshot(store, snapshot_id(day), xb, ids, **kw)
    publish(store, m)
    return m, xb


def test_loads_a_published_snapshot_from_the_store(
    store: ObjectStore, make_app: AppFactory
) -> None:
    m, xb = flat_snapshot(store, 1)
    app = make_app(store)
    r = vector_query(app.test_client(), xb[3], k=1).json
    assert r["snapshot_id"] == m.snapshot_id and r["hits"][0]["id"] == 1_000_003
    cache = app.extensions["vsearch"].registry.cache
    assert sorted(p.stem for p in cache.glob("*.index")) == sorted(s.sha256 for s in m.shards)
    assert app.test_client().get("/v1/manifest", headers=AUTH).json == m.to_dict()


def corrupt_shard(store: ObjectStore, m: Any) -> str:
    data = bytearray(store.get(m.shards[0].uri))
    data[-10] ^= 0xFF
    store.put(m.shards[0].uri, bytes(data))
    return "sha256"


REFUSALS = {
    "corrupted shard": (lambda store: corrupt_shard(store, flat_snapshot(store, 2)[0])),
    "foreign encoder": (
        lambda store: (
            flat_snapshot(store, 2, encoder=EncoderInfo("clip", "ViT-B-32", "abc", D, True))
            and "encoder clip/ViT-B-32@abc"
        )
    ),
    "over budget": (lambda store: flat_snapshot(store, 2, n=4000) and "memory budget"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_snapshot_leaves_the_old_one_serving(
    local_store: ObjectStore, make_app: AppFactory, case: str
) -> None:
    m1, xb = flat_snapshot(local_store, 1)
    app = make_app(local_store, MEMORY_BUDGET_BYTES=400_000)
    client, state = app.test_client(), app.extensions["vsearch"]
    expected = REFUSALS[case](local_store)
    assert state.replica.tick() == "refused"
    assert state.replica.tick() == "unchanged"  # not retried until CURRENT moves
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["snapshot_id"] == m1.snapshot_id
    assert ready.json["refused"]["snapshot_id"] == snapshot_id(2)
    assert expected in ready.json["refused"]["reason"]
    assert vector_query(client, xb[0], k=1).json["snapshot_id"] == m1.snapshot_id
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'vsearch_snapshot_refusals_total{{snapshot_id="{snapshot_id(2)}"}} 1.0' in metrics
    assert f'vsearch_snapshot_info{{snapshot_id="{m1.snapshot_id}"}} 1.0' in metrics

    flat_snapshot(local_store, 3)  # a good one after it is served, and clears the refusal
    assert state.replica.tick() == "swapped"
    assert client.get("/readyz").json["refused"] is None
    assert client.get("/readyz").json["snapshot_id"] == snapshot_id(3)


def test_not_ready_without_a_snapshot_then_ready_in_the_background(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    app = make_app(local_store, LOAD_ON_START="background", WATCH_INTERVAL_S=0.05)
    client = app.test_client()

    def wait_for(check: Any) -> Any:
        deadline = time.monotonic() + 10
        while not (r := check()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return r

    r = wait_for(
        lambda: (r := client.get("/readyz")).json["reason"] != "no snapshot loaded yet" and r
    )
    assert r.status_code == 503 and "no CURRENT" in r.json["reason"]
    assert vector_query(client, np.ones(D)).status_code == 503
    flat_snapshot(local_store, 1)
    wait_for(lambda: client.get("/readyz").status_code == 200)


def test_an_old_snapshot_is_released_only_after_its_last_request(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    _m1, xb = flat_snapshot(local_store, 1)
    app = make_app(local_store)
    state = app.extensions["vsearch"]
    with state.registry.lease() as old:
        flat_snapshot(local_store, 2)
        assert state.replica.tick() == "swapped"
        assert old.retired and not old.closed
        _, found = old.searcher.shards[0].submit(xb[:1], 1, None).result(timeout=5)
        assert int(found[0][0]) == 1_000_000
    assert old.closed
    assert state.registry.current.snapshot_id == snapshot_id(2)


@pytest.fixture(scope="module")
def ivf_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[ObjectStore, Any, np.ndarray]:
    from vsearch.storage import LocalStore

    store = LocalStore(tmp_path_factory.mktemp("ivf") / "store")
    xb = sample_vectors(3000, D, seed=5)
    ids = np.arange(3000, dtype="int64") * 3
    m = build_snapshot(store, snapshot_id(1), xb, ids, factory="OPQ8,IVF64,PQ8", nshards=2)
    publish(store, m)
    return store, m, xb


def test_ivf_nprobe_is_per_request_and_matches_raw_faiss(
    ivf_store: Any, make_app: AppFactory
) -> None:
    store, m, xb = ivf_store
    app = make_app(store)
    client = app.test_client()
    shards = [
        faiss.read_index(str(app.extensions["vsearch"].registry.cache / f"{s.sha256}.index"))
        for s in m.shards
    ]
    q = xb[17]
    for nprobe in (1, 4, 64):
        params = faiss.SearchParametersPreTransform(
            index_params=faiss.SearchParametersIVF(nprobe=nprobe)
        )
        D_, I_ = zip(*(s.search(q[None], 10, params=params) for s in shards), strict=True)
        dist, ids = np.concatenate([d[0] for d in D_]), np.concatenate([i[0] for i in I_])
        expected = ids[np.argsort(-dist, kind="stable")][:10]
        r = vector_query(client, q, k=10, nprobe=nprobe).json
        assert r["nprobe"] == nprobe
        assert sorted(h["id"] for h in r["hits"]) == sorted(int(i) for i in expected)
    served = app.extensions["vsearch"].registry.current.searcher.shards
    assert all(faiss.extract_index_ivf(s.index).nprobe == 1 for s in served)  # never mutated
    assert vector_query(client, q, exact=True).json["nprobe"] == 64


def test_target_recall_maps_to_nprobe_through_the_recall_curve(
    ivf_store: Any, make_app: AppFactory
) -> None:
    store, m, xb = ivf_store
    client = make_app(store).test_client()
    curve = m.recall.curve
    assert len(curve) >= 4 and curve[-1][1] > curve[0][1]
    target = curve[2][1]
    expected = min(p for p, r, _ in curve if r >= target)
    assert vector_query(client, xb[1], target_recall=target).json["nprobe"] == expected
    assert vector_query(client, xb[1], target_recall=1.0).json["nprobe"] in (
        curve[-1][0],
        *[p for p, r, _ in curve if r >= 1.0],
    )
    assert vector_query(client, xb[1]).json["nprobe"] == m.index.default_nprobe


def test_more_like_this_on_ivf_uses_the_direct_map(ivf_store: Any, make_app: AppFactory) -> None:
    store, _, _xb = ivf_store
    client = make_app(store).test_client()
    r = client.post("/v1/search", json={"id": 3 * 42, "k": 5, "nprobe": 64})
    assert r.status_code == 200, r.json
    assert 3 * 42 not in [h["id"] for h in r.json["hits"]]
    assert client.post("/v1/search", json={"id": 1}).status_code == 404  # ids are multiples of 3


def test_readyz_reflects_the_present_once_current_names_the_served_snapshot_again(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """Regression: an error of an earlier poll stayed in /readyz after CURRENT came back."""
    m1, _ = flat_snapshot(local_store, 1)
    app = make_app(local_store)
    client, state = app.test_client(), app.extensions["vsearch"]
    pointer = local_store.get(CURRENT_KEY)
    local_store.put(CURRENT_KEY, b"{not json")  # a bad write by hand, then put back
    assert state.replica.tick() == "error"
    assert "cannot read CURRENT" in client.get("/readyz").json["last_error"]
    local_store.put(CURRENT_KEY, pointer)
    assert state.replica.tick() == "unchanged"
    ready = client.get("/readyz").json
    assert ready["snapshot_id"] == m1.snapshot_id
    assert ready["last_error"] is None and ready["refused"] is None

    corrupt_shard(local_store, flat_snapshot(local_store, 2)[0])
    assert state.replica.tick() == "refused"
    local_store.put(CURRENT_KEY, pointer)  # back to the served one: nothing is refused now
    assert state.replica.tick() == "unchanged"
    assert state.registry.status()["refused"] is None
    assert client.get("/readyz").json["refused"] is None


def test_a_swap_keeps_the_predecessors_cached_shards_for_a_rollback(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """Regression: the old snapshot, closed at once when no request held it, was no longer
    among the snapshots whose shards the cache keeps; only files under a second old were
    spared, so on a slow machine a rollback downloaded its shards again."""
    m1, _ = flat_snapshot(local_store, 1)
    app = make_app(local_store)
    state = app.extensions["vsearch"]
    cache = state.registry.cache
    old = time.time() - 60
    for path in cache.iterdir():  # written a minute ago: past the cache's grace for new files
        os.utime(path, (old, old))
    flat_snapshot(local_store, 2)
    assert state.replica.tick() == "swapped"
    assert all((cache / f"{s.sha256}.index").exists() for s in m1.shards)


def test_a_cached_shard_whose_store_copy_went_bad_is_served_and_reported(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """Intended: the cache serves exactly the bytes the manifest names (sha256-verified), so a
    rollback does not depend on the store; reported, since other replicas would refuse it."""
    m1, xb = flat_snapshot(local_store, 1)
    app = make_app(local_store)
    client, state = app.test_client(), app.extensions["vsearch"]
    assert state.registry.status()["store_warnings"] == []
    flat_snapshot(local_store, 2)
    assert state.replica.tick() == "swapped"
    corrupt_shard(local_store, m1)  # the store's copy of snapshot 1 goes bad
    rollback(local_store, to=m1.snapshot_id, checksums=False)  # sizes still match
    assert state.replica.tick() == "swapped"  # from the cache
    assert vector_query(client, xb[3], k=1).json["hits"][0]["id"] == 1_000_003
    (warning,) = state.registry.status()["store_warnings"]
    assert warning.startswith(f"shards[0] {m1.shards[0].uri}: the store's copy has sha256")
    assert "serving the verified cached copy" in warning

    flat_snapshot(local_store, 3)  # another snapshot: the warning was about snapshot 1 only
    assert state.replica.tick() == "swapped"
    assert state.registry.status()["store_warnings"] == []
