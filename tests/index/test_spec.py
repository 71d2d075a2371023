"""Spec selection: the family at every size on defaults, budgets honoured as measured on
built indexes, errors that name the budget that would fit, explicit factories, and real
CIFAR-10 collections that pass the gate on defaults."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.cifar import CifarVectors, cifar_fixture  # noqa: F401  (the ``cifar`` fixture)
from tests.index.snapshots import SID, write_snapshot
from vsearch import stages
from vsearch.config import Settings
from vsearch.index import (
    IndexSpec,
    RecallGateFailed,
    SpecError,
    build_shard,
    choose_spec,
    spec_from_factory,
    train_index,
    validate_snapshot,
)
from vsearch.index.layout import report_key
from vsearch.index.spec import (
    DEFAULT_BYTES_PER_VECTOR,
    DEFAULT_MAX_QUERY_MS,
    DEFAULT_MEMORY_FLOOR_MB,
)
from vsearch.index.structure import describe, refine_store_bytes
from vsearch.index.synthetic import clustered_vectors
from vsearch.index.train import configure_training, train_on
from vsearch.storage import LocalStore

MIB = 2**20


def build(spec: IndexSpec, xb: np.ndarray) -> faiss.Index:
    index = faiss.index_factory(spec.d, spec.factory, spec.faiss_metric)
    keep = configure_training(index, spec, seed=0)
    train_on(index, xb[: max(spec.n_train, 1)], "cpu")
    del keep
    index.add_with_ids(xb, np.arange(len(xb), dtype="int64") * 3)
    return index


def resident_bytes(index: faiss.Index, tmp_path: Path) -> int:
    """The shard file as the service keeps it in RAM: all but the memory-mapped
    re-ranking codes (IDMap2's id map is rebuilt on load: 48 B/vector more)."""
    path = tmp_path / "index"
    faiss.write_index(index, str(path))
    extra = 48 * index.ntotal if isinstance(index, faiss.IndexIDMap2) else 0
    return path.stat().st_size - refine_store_bytes(index) + extra


def family(spec: IndexSpec) -> str:
    if spec.factory == "IDMap2,Flat":
        return "exact"
    if spec.factory.startswith("IDMap,OPQ"):
        return "IVF-PQ"
    return "IVF-" + spec.factory.rsplit(",", 1)[1]  # IVF{nlist}[_HNSW32],Flat|SQ8


def test_the_defaults_are_the_settings_defaults() -> None:
    """A budget equal to its default is a target, anything else a limit: both must agree."""
    s = Settings()
    assert s.index_bytes_per_vector == DEFAULT_BYTES_PER_VECTOR
    assert s.index_max_query_ms == DEFAULT_MAX_QUERY_MS
    assert s.index_memory_floor_mb == DEFAULT_MEMORY_FLOOR_MB


@pytest.mark.parametrize(
    ("n", "d", "expected"),
    [
        (1, 1280, "exact"),
        (100, 1280, "exact"),
        (1_000, 1280, "exact"),  # the new user's 1,000 photos: 5 MiB, 0.3 ms
        (10_000, 1280, "IVF-Flat"),  # 50 MiB, but 3.2 ms exact
        (30_000, 1280, "IVF-SQ8"),  # float32 lists: 146 MiB, over 1 ms
        (60_000, 1280, "IVF-PQ"),  # SQ8 lists: ~1.3 ms by the model
        (1_000_000, 1280, "IVF-PQ"),
        (100_000_000, 1280, "IVF-PQ"),
        (1, 512, "exact"),
        (100, 512, "exact"),
        (1_000, 512, "exact"),
        (10_000, 512, "IVF-Flat"),
        (60_000, 512, "IVF-Flat"),  # 120 MiB under the floor
        (1_000_000, 512, "IVF-PQ"),  # SQ8 lists would be 520 MiB
        (100_000_000, 512, "IVF-PQ"),
    ],
)
def test_every_size_gets_a_family_on_defaults_that_fits_the_budget(
    n: int, d: int, expected: str
) -> None:
    """The family chosen at each size (a spec, not an index: the IVF-SQ8 and OPQ/IVF/PQ
    families are built and gated in test_default_families.py, exact and IVF-Flat in
    test_real_photos_pass_the_gate_on_defaults)."""
    spec = choose_spec(n, d)
    assert family(spec) == expected, spec.reasons
    resident = spec.est_resident_bytes_per_vector
    assert resident is not None
    assert resident * n <= max(DEFAULT_BYTES_PER_VECTOR * n, DEFAULT_MEMORY_FLOOR_MB * MIB)
    if n >= 10_000_000:  # the per-vector budget governs at scale
        assert resident <= DEFAULT_BYTES_PER_VECTOR
    assert spec.reasons[0].startswith("budget: ") and len(spec.reasons) >= 3
    faiss.index_factory(d, spec.factory, spec.faiss_metric)  # a factory faiss understands


def test_the_latency_default_is_a_target_a_set_latency_a_limit() -> None:
    spec = choose_spec(100_000_000, 512)  # one shard: ~3.5 ms by the model
    assert family(spec) == "IVF-PQ"
    assert any("target" in r and "more shards" in r for r in spec.reasons), spec.reasons
    with pytest.raises(SpecError, match=r"answers within 2 ms/query") as e:
        choose_spec(100_000_000, 512, max_query_ms=2.0)
    need = float(re.search(r"would fit is ([\d.]+) ms/query", str(e.value)).group(1))  # type: ignore[union-attr]
    assert family(choose_spec(100_000_000, 512, max_query_ms=need)) == "IVF-PQ"
    with pytest.raises(SpecError):
        choose_spec(100_000_000, 512, max_query_ms=need * 0.98)
    assert family(choose_spec(100_000_000, 512, max_query_ms=2.0, nshards=4)) == "IVF-PQ"


@pytest.mark.parametrize(
    ("n", "d", "options"),
    [
        (100_000, 512, {"bytes_per_vector_budget": 4, "memory_floor_mb": 0}),
        (1_000, 1280, {"bytes_per_vector_budget": 64, "memory_floor_mb": 0}),  # fixed costs
        (50_000, 1280, {"bytes_per_vector_budget": 16, "memory_floor_mb": 0.5}),  # 16 B: ids
    ],
)
def test_a_budget_nothing_fits_names_the_smallest_that_would(
    n: int, d: int, options: dict[str, float]
) -> None:
    b = options["bytes_per_vector_budget"]
    with pytest.raises(SpecError, match=rf"fits {b:g} B/vector") as e:
        choose_spec(n, d, **options)  # type: ignore[arg-type]
    message = str(e.value)
    need = float(re.search(r"would fit is ([\d.]+) B/vector", message).group(1))  # type: ignore[union-attr]
    floor = float(re.search(r"memory floor of ([\d.]+) MiB", message).group(1))  # type: ignore[union-attr]
    assert need > b
    spec = choose_spec(n, d, **{**options, "bytes_per_vector_budget": need})  # type: ignore[arg-type]
    assert spec.est_resident_bytes_per_vector is not None
    assert spec.est_resident_bytes_per_vector <= need
    with pytest.raises(SpecError):  # the smallest, give or take the rounding
        choose_spec(n, d, **{**options, "bytes_per_vector_budget": need * 0.98})  # type: ignore[arg-type]
    choose_spec(n, d, **{**options, "memory_floor_mb": floor})  # type: ignore[arg-type]


def test_small_amounts_of_memory_are_never_a_reason_to_compress() -> None:
    """Regression: 1,000 x 1280 real photos raised "no IVF-PQ index of 1000 x 1280 fits
    64 B/vector"; the centroids and the OPQ matrix cannot be amortised over 1,000 vectors."""
    assert choose_spec(1_000, 1280, bytes_per_vector_budget=64).factory == "IDMap2,Flat"
    spec = choose_spec(20_000, 512, max_query_ms=0.5)  # exact: 1.3 ms; lists: 41 MiB
    assert family(spec) == "IVF-Flat"
    # The floor at 0: the per-vector budget at every size, fixed costs included.
    spec = choose_spec(20_000, 512, max_query_ms=0.5, memory_floor_mb=0)
    assert family(spec) == "IVF-PQ" and spec.est_resident_bytes_per_vector is not None
    assert spec.est_resident_bytes_per_vector <= DEFAULT_BYTES_PER_VECTOR


@pytest.mark.parametrize(
    ("n", "d", "budget", "floor_mb", "max_ms", "expected"),
    [
        (2_000, 64, 48.0, 1.0, 1.0, "exact"),
        (20_000, 64, 48.0, 8.0, 0.25, "IVF-Flat"),  # exact scans take ~0.32 ms
        (20_000, 64, 48.0, 2.0, 0.25, "IVF-SQ8"),  # float32 lists would need ~5 MiB
        (2_000, 64, 48.0, 0.0, 1.0, "IVF-PQ"),
        (10_000, 64, 48.0, 0.0, 1.0, "IVF-PQ"),
        (20_000, 96, 48.0, 0.0, 1.0, "IVF-PQ"),
        (20_000, 96, 32.0, 0.0, 1.0, "IVF-PQ"),
    ],
)
def test_measured_bytes_per_vector_within_budget(
    n: int, d: int, budget: float, floor_mb: float, max_ms: float, expected: str, tmp_path: Path
) -> None:
    spec = choose_spec(
        n, d, bytes_per_vector_budget=budget, memory_floor_mb=floor_mb, max_query_ms=max_ms
    )
    assert family(spec) == expected, spec.reasons
    xb, _ = clustered_vectors(n, d, nclusters=64, seed=1)
    resident = resident_bytes(build(spec, xb), tmp_path)
    assert resident <= max(budget * n, floor_mb * MIB), (spec.factory, resident / n)
    if floor_mb == 0:
        assert resident / n <= budget
    # The model that chose the spec is not far off what was built.
    assert spec.est_resident_bytes_per_vector is not None
    assert abs(resident / n - spec.est_resident_bytes_per_vector) < max(
        0.1 * budget, 0.03 * resident / n
    )


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


def test_bad_factory_and_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(SpecError, match="factory 'IVF64,PQ7'"):
        spec_from_factory("IVF64,PQ7", 10_000, 64)  # 64 is not a multiple of 7
    with pytest.raises(SpecError):
        choose_spec(0, 512)
    with pytest.raises(SpecError, match="memory_floor_mb >= 0"):
        choose_spec(10, 512, memory_floor_mb=-1)


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


def test_a_failed_gate_says_how_close_it_came(tmp_path: Path) -> None:
    """The gate's error names the best recall reached and at which nprobe."""
    store = LocalStore(tmp_path / "store")
    write_snapshot(store, n=2000)
    train_index(store, SID, factory="IVF16,PQ2x4fs", nq=100)  # 1 B/vector: hopeless
    build_shard(store, SID, 0, 1)
    with pytest.raises(RecallGateFailed, match=r"no nprobe up to 16 reaches recall@10 0\.9") as e:
        validate_snapshot(store, SID, target_recall=0.9)
    curve = json.loads(store.get(report_key(SID)))["curve"]
    nprobe, best, _ = max(curve, key=lambda p: p[1])
    assert str(e.value).endswith(f"; best recall@10 reached: {best:.4f} at nprobe={nprobe}")


def import_and_build(store: LocalStore, folder: Path, sid: str, xb: np.ndarray) -> dict:
    """``xb`` imported as precomputed vectors and built by the stages on defaults (whatever
    VSEARCH_* says in this environment); returns the validation report."""
    folder.mkdir(parents=True)
    np.save(folder / "photos.npy", xb)
    np.save(folder / "photos.ids.npy", np.arange(len(xb), dtype="int64") * 7 + 11)
    for task in stages.plan(store, sid, [str(folder)], run={"dag_id": "test"}):
        stages.embed(store, sid, task)
    stages.build_index(store, sid, settings=Settings.load(environ={}))
    return dict(json.loads(store.get(report_key(sid))))


@pytest.mark.slow
def test_real_photos_pass_the_gate_on_defaults(cifar: CifarVectors, tmp_path: Path) -> None:
    """1,000 and 10,000 CIFAR-10 images (EfficientNet-Lite0) build and pass the gate with
    no options: the user who got "SpecError: no IVF-PQ index of 1000 x 1280 fits"."""
    store = LocalStore(tmp_path / "store")
    expected = {"exact": cifar.xq, "IVF-Flat": cifar.xb}  # 1,000 and 10,000 x 1280
    for i, (kind, xb) in enumerate(expected.items()):
        sid = f"2026030{i + 1}T000000Z"
        report = import_and_build(store, tmp_path / sid, sid, xb)
        spec = IndexSpec.from_dict(report["spec"])
        assert family(spec) == kind, spec.reasons
        assert report["gate"]["passed"], report["gate"]
        assert report["recall"]["image_to_image"]["recall@10"] >= 0.95
        assert report["ntotal"] == len(xb) and math.isfinite(report["seconds"]["validate"])
