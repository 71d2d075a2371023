"""Spec selection: budgets honoured as measured on built indexes, explicit factories."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from vsearch.index import IndexSpec, SpecError, choose_spec, spec_from_factory
from vsearch.index.structure import describe, refine_store_bytes
from vsearch.index.synthetic import clustered_vectors
from vsearch.index.train import configure_training, train_on


def build(spec: IndexSpec, xb: np.ndarray) -> faiss.Index:
    index = faiss.index_factory(spec.d, spec.factory, spec.faiss_metric)
    keep = configure_training(index, spec, seed=0)
    train_on(index, xb[: spec.n_train], "cpu")
    del keep
    index.add_with_ids(xb, np.arange(len(xb), dtype="int64") * 3)
    return index


@pytest.mark.parametrize(
    ("n", "d", "budget"),
    [(2_000, 64, 48.0), (10_000, 64, 48.0), (20_000, 96, 48.0), (20_000, 96, 32.0)],
)
def test_measured_bytes_per_vector_within_budget(
    n: int, d: int, budget: float, tmp_path: Path
) -> None:
    spec = choose_spec(n, d, bytes_per_vector_budget=budget)
    assert spec.nlist is not None, spec  # compressed: 4*d bytes would not fit
    xb, _ = clustered_vectors(n, d, nclusters=64, seed=1)
    index = build(spec, xb)
    path = tmp_path / "index"
    faiss.write_index(index, str(path))
    # Resident: the whole file except the re-ranking codes the service memory-maps.
    resident = (path.stat().st_size - refine_store_bytes(index)) / n
    assert resident <= budget, (spec.factory, resident)
    # The model that chose the spec is not far off what was built.
    assert spec.est_resident_bytes_per_vector is not None
    assert abs(resident - spec.est_resident_bytes_per_vector) < 0.1 * budget


def test_the_seeds_explicit_factory_is_accepted() -> None:
    spec = spec_from_factory("OPQ32,IVF4096,PQ32x8", 1_000_000, 512)
    assert spec.factory == "OPQ32,IVF4096,PQ32x8"  # IVF carries ids: no wrapper
    assert (spec.nlist, spec.m, spec.nbits, spec.opq, spec.refine) == (4096, 32, 8, True, None)
    assert spec.n_train == 64 * 4096


@pytest.mark.parametrize(
    ("factory", "wrapped", "refine"),
    [
        ("Flat", "IDMap2,Flat", None),
        ("HNSW32", "IDMap2,HNSW32", None),
        ("IVF64,PQ8x4fs,RFlat", "IDMap,IVF64,PQ8x4fs,RFlat", "Flat"),
        ("IVF64,PQ8x4fs,Refine(SQ8)", "IDMap,IVF64,PQ8x4fs,Refine(SQ8)", "SQ8"),
    ],
)
def test_indexes_that_cannot_carry_ids_get_a_wrapper(
    factory: str, wrapped: str, refine: str | None
) -> None:
    spec = spec_from_factory(factory, 10_000, 64)
    assert (spec.factory, spec.refine) == (wrapped, refine)
    index = faiss.index_factory(64, spec.factory, spec.faiss_metric)
    xb, _ = clustered_vectors(3000, 64, seed=2)
    index.train(xb)
    index.add_with_ids(xb[:10], np.arange(100, 110, dtype="int64"))  # would raise unwrapped
    assert describe(index)["ids"] in ("idmap", "ivf")


def test_bad_factory_and_impossible_budget_are_clear_errors() -> None:
    with pytest.raises(SpecError, match="factory 'IVF64,PQ7'"):
        spec_from_factory("IVF64,PQ7", 10_000, 64)  # 64 is not a multiple of 7
    with pytest.raises(SpecError, match="fits 4 B/vector"):
        choose_spec(100_000, 512, bytes_per_vector_budget=4)
    with pytest.raises(SpecError):
        choose_spec(0, 512)


def test_small_or_cheap_collections_get_an_exact_index() -> None:
    assert choose_spec(500, 512).factory == "IDMap2,Flat"
    # 4*64 + id bytes fit 400 B and 5k x 64 scans in well under 1 ms.
    spec = choose_spec(5_000, 64, bytes_per_vector_budget=400)
    assert (spec.factory, spec.nlist) == ("IDMap2,Flat", None)


def test_large_collections_get_opq_ivf_hnsw_fast_scan_and_on_disk_refine() -> None:
    spec = choose_spec(10_000_000, 512, nshards=4)
    assert spec.factory.startswith("IDMap,OPQ")
    assert "_HNSW32," in spec.factory and "x4fsr," in spec.factory
    assert spec.factory.endswith("Refine(SQ8)") and spec.refine == "SQ8"
    assert spec.est_resident_bytes_per_vector is not None
    assert spec.est_resident_bytes_per_vector <= 48
    assert spec.est_disk_bytes_per_vector is not None
    assert spec.est_disk_bytes_per_vector > 512  # the SQ8 copy lives on disk
    assert any("nlist=" in r for r in spec.reasons)


def test_spec_is_json_round_trippable() -> None:
    spec = choose_spec(100_000, 128, metric="l2")
    again = IndexSpec.from_dict(spec.to_dict())
    assert again == spec and again.metric == "l2"
