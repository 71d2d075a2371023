"""The compressed families on defaults, built and gated; and the spec chosen on defaults
for every size from one vector to a billion, checked against the budgets it promises.

``test_spec.py`` checks which family each size gets; the CIFAR-10 test there builds the
exact and IVF-Flat ones. Here the IVF-SQ8 and OPQ/IVF/PQ families go through the stages
as a run builds them (``stages.build_index`` with ``Settings`` from the environment):
the chooser picks the family, then the index is trained, built, gated against exact
search and published. Only the memory floor is lowered (``VSEARCH_INDEX_MEMORY_FLOOR_MB``)
so that the switch to each family happens at a few thousand vectors; the per-vector and
latency budgets and the recall target are the defaults.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from vsearch import stages
from vsearch.config import Settings
from vsearch.index import IndexSpec, choose_spec
from vsearch.index.families import MAX_NLIST, MIB
from vsearch.index.layout import report_key, shard_key
from vsearch.index.spec import DEFAULT_BYTES_PER_VECTOR, DEFAULT_MEMORY_FLOOR_MB, MAX_TRAIN
from vsearch.index.structure import describe, refine_store_bytes
from vsearch.index.synthetic import clustered_vectors
from vsearch.storage import LocalStore

FLOOR_MB = 0.5
D = 64
RANK = {"exact": 0, "IVF-Flat": 1, "IVF-SQ8": 2, "IVF-PQ": 3}


def family(factory: str) -> str:
    if factory == "IDMap2,Flat":
        return "exact"
    if factory.startswith("IDMap,OPQ"):
        return "IVF-PQ"
    return "IVF-" + factory.rsplit(",", 1)[1]  # IVF{nlist}[_HNSW32],Flat|SQ8


def code_bytes(factory: str, d: int) -> float:
    """Bytes per vector of the codes the factory string asks for, read from the string
    alone (not from the cost model that chose it)."""
    pq = re.search(r"PQ(\d+)x(\d+)", factory)
    if pq:
        return int(pq.group(1)) * int(pq.group(2)) / 8
    return d if factory.endswith("SQ8") else 4 * d


@pytest.mark.parametrize(
    ("n", "expected", "nlist"),
    [(4_000, "IVF-SQ8", 102), (8_000, "IVF-PQ", 205)],
)
def test_compressed_families_are_built_and_pass_the_gate_on_defaults(
    n: int, expected: str, nlist: int, tmp_path: Path
) -> None:
    settings = Settings.load(environ={"VSEARCH_INDEX_MEMORY_FLOOR_MB": str(FLOOR_MB)})
    assert settings.index_target_recall == Settings.index_target_recall  # the default gate
    store, sid = LocalStore(tmp_path / "store"), "20260301T000000Z"
    xb, _ = clustered_vectors(n, D, nclusters=64, seed=1)
    ids = np.arange(n, dtype="int64") * 7 + 11
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "photos.npy", xb)
    np.save(tmp_path / "in" / "photos.ids.npy", ids)
    for task in stages.plan(store, sid, [str(tmp_path / "in")], run={"dag_id": "test"}):
        stages.embed(store, sid, task)
    stages.build_index(store, sid, settings=settings)  # raises RecallGateFailed on a miss

    report = json.loads(store.get(report_key(sid)))
    spec = IndexSpec.from_dict(report["spec"])
    assert family(spec.factory) == expected and spec.nlist == nlist, spec.reasons
    target = settings.index_target_recall
    assert report["gate"]["passed"] and report["target_recall"] == target, report["gate"]
    assert report["recall"]["image_to_image"]["recall@10"] >= target
    assert report["ntotal"] == n

    # The published shard is that family, holds every vector, fits the memory budget...
    index = faiss.deserialize_index(np.frombuffer(store.get(shard_key(sid, 0)), dtype="uint8"))
    shape = describe(index)
    assert index.ntotal == n and shape["nlist"] == nlist
    assert (shape["m"], shape["nbits"], shape["refine"]) == (spec.m, spec.nbits, spec.refine)
    resident = faiss.serialize_index(index).size - refine_store_bytes(index)
    assert resident <= max(DEFAULT_BYTES_PER_VECTOR * n, FLOOR_MB * MIB)
    # ...and, measured here against exact search (not the report's number), reaches the
    # gate's target at the default nprobe the gate chose.
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", report["default_nprobe"])
    queries, qids = xb[:: n // 400], ids[:: n // 400]
    _, found = index.search(queries, 11)
    exact = np.argsort(-(queries @ xb.T), axis=1)[:, :11]
    hits = [
        len({i for i in got if i != q}.intersection([ids[j] for j in want if ids[j] != q][:10]))
        for got, want, q in zip(found, exact, qids, strict=True)
    ]
    assert np.mean(hits) / 10 >= target, np.mean(hits) / 10


SIZES = (1, 7, 100, 999, 3_000, 10**4, 10**5, 3 * 10**5, 10**6, 10**7, 10**8, 10**9)


@pytest.mark.parametrize("d", [1, 16, 100, 384, 512, 768, 1280, 4096])
@pytest.mark.parametrize("nshards", [1, 4])
def test_defaults_choose_a_spec_within_budget_from_one_vector_to_a_billion(
    d: int, nshards: int
) -> None:
    """At every size the default spec fits the memory budget by the model, its codes (read
    from the factory string) fit what the model charged, its lists and training sample
    are possible, and more vectors never get a less compressed family."""
    rank = 0
    for n in SIZES:
        spec = choose_spec(n, d, nshards=nshards)
        name = family(spec.factory)
        assert RANK[name] >= rank, (n, spec.factory)
        rank = RANK[name]
        resident = spec.est_resident_bytes_per_vector
        assert resident is not None and spec.reasons[0].startswith("budget: ")
        assert resident * n <= max(DEFAULT_BYTES_PER_VECTOR * n, DEFAULT_MEMORY_FLOOR_MB * MIB)
        if n >= 10**7:
            assert resident <= DEFAULT_BYTES_PER_VECTOR, (n, spec.factory)
        assert code_bytes(spec.factory, d) <= resident, (n, spec.factory, resident)
        if name == "exact":
            assert spec.nlist is None and spec.n_train == 0
            continue
        assert spec.nlist is not None and 1 <= spec.nlist <= min(n, MAX_NLIST)
        assert f"IVF{spec.nlist}" in spec.factory
        assert spec.nlist <= spec.n_train <= min(n, MAX_TRAIN), (n, spec.factory, spec.n_train)
        if name == "IVF-PQ":
            assert spec.m is not None and spec.nbits is not None and spec.opq
            rotated = re.search(r"OPQ\d+(?:_(\d+))?,", spec.factory)
            assert rotated is not None
            assert int(rotated.group(1) or d) % spec.m == 0, spec.factory
            assert spec.refine == "SQ8" and spec.k_factor
