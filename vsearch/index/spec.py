"""Choosing the faiss index for a snapshot from its size and a memory and latency budget.

``choose_spec`` follows autofaiss's idea (the index that fits
``max_index_memory_usage`` and ``max_index_query_time_ms``) with an explicit
cost model, so the report can say why each number was picked:

- **exact** (``IDMap2,Flat``) when 4·d bytes per vector fit the budget and a
  brute-force scan of one shard fits the latency budget — or when there are
  too few vectors for a compressed index to make sense;
- otherwise **OPQ + IVF + PQ, 4-bit fast-scan**, re-ranked by an SQ8 copy of
  the vectors (``Refine(SQ8)``) that the service may memory-map from disk.
  nlist ≈ 4·√n per shard (the usual rule), halved until the centroids cost at
  most a fifth of the budget; an HNSW coarse quantizer once scanning the
  centroids alone would eat a quarter of the latency budget; then the largest
  PQ that fits what is left. OPQ may reduce the dimension (≤ 8 dims per
  sub-quantizer): the rotation keeps the directions that carry the variance,
  and the re-ranking step works on the full vectors again.

Budgets are *resident* bytes per vector: what must stay in RAM (codes, ids,
centroids, rotation). The re-ranking codes are reported apart, as disk bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Metric = Literal["ip", "l2"]

# One core, one query, brute force: multiply-adds per millisecond. Deliberately
# low (memory-bound scan of float32 on a busy core) so the latency rule errs
# towards the approximate index; bench/index_bench.py measures the real figure.
FLAT_MACS_PER_MS = 4e6
IVF_ID_BYTES = 8  # faiss inverted lists store int64 ids
IDMAP_ID_BYTES = 8  # IndexIDMap's id table (IndexRefine cannot carry ids itself)
IDMAP2_BYTES = 8 + 48  # IndexIDMap2 also keeps an unordered_map id -> position in RAM
LIST_OVERHEAD_BYTES = 48  # two std::vector headers per inverted list
HNSW_QUANTIZER_LINKS = 32
MIN_COMPRESSED_N = 1000  # below this an exact index is a few MB at most
MAX_NLIST = 1 << 16
MAX_TRAIN = 500_000
# Re-ranking shortlist: k_factor * k candidates from the PQ scan. On Fashion-MNIST
# (784-d, 13 B of codes) recall@10 at nprobe 8 was 0.68 / 0.91 / 0.956 / 0.964 for
# k_factor 8 / 32 / 64 / 96, at ~0.5 ms/query for 64 (bench/index_bench.py).
DEFAULT_K_FACTOR = 64
REFINE_BYTES_PER_DIM = {"SQ8": 1, "SQfp16": 2, "Flat": 4}
_CENTROID_SHARE = 0.2  # at most this share of the budget goes to fixed costs


class SpecError(ValueError):
    """No index fits the request, or a factory string is unusable; says what would."""


@dataclass(frozen=True)
class IndexSpec:
    """What to build, and why. JSON-able through ``to_dict``/``from_dict``."""

    factory: str  # faiss.index_factory string, including the id-carrying wrapper
    metric: Metric
    d: int
    nlist: int | None
    m: int | None
    nbits: int | None
    opq: bool
    refine: str | None  # "SQ8", "SQfp16", "Flat" or None
    k_factor: int | None
    n_train: int
    est_resident_bytes_per_vector: float | None
    est_disk_bytes_per_vector: float | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        return cls(**{**data, "reasons": tuple(data["reasons"])})

    @property
    def faiss_metric(self) -> int:
        import faiss

        return int(faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2)


def training_size(n: int, nlist: int | None, nbits: int | None, opq: bool) -> int:
    """Rule of thumb: 64 points per IVF centroid and per PQ centroid (faiss warns under
    39, k-means gains little past 256)."""
    need = 1000
    if nlist:
        need = max(need, 64 * nlist)
    if nbits:
        need = max(need, 64 * 2**nbits)
    if opq:  # OPQ trains its own PQ, 8-bit unless matched to a 4-bit one
        need = max(need, 64 * 2 ** (nbits or 8))
    return min(n, need, MAX_TRAIN)


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def estimate_bytes(
    *,
    n_shard: int,
    d: int,
    nlist: int,
    d_ivf: int,
    m: int,
    nbits: int,
    opq: bool,
    hnsw: bool,
    refine: str | None,
) -> tuple[float, float]:
    """(resident, disk) bytes per vector of one IVF-PQ shard holding ``n_shard`` vectors."""
    code = m * nbits / 8
    fixed = nlist * d_ivf * 4 + nlist * LIST_OVERHEAD_BYTES + 2**nbits * d_ivf * 4
    if hnsw:
        fixed += nlist * HNSW_QUANTIZER_LINKS * 2 * 4 * 1.1
    if opq:
        fixed += d * d_ivf * 4
    if nbits == 4:  # fast-scan pads each list to blocks of 32 codes: half a block wasted
        fixed += nlist * 16 * code
    ids = IVF_ID_BYTES + (IDMAP_ID_BYTES if refine else 0)
    resident = code + ids + fixed / max(n_shard, 1)
    disk = resident + (REFINE_BYTES_PER_DIM[refine] * d if refine else 0)
    return resident, disk


def choose_spec(
    n: int,
    d: int,
    *,
    bytes_per_vector_budget: float = 48.0,
    max_query_ms: float = 1.0,
    metric: Metric = "ip",
    nshards: int = 1,
    refine: str | None = "SQ8",
    fast_scan: bool = True,
    k_factor: int = DEFAULT_K_FACTOR,
) -> IndexSpec:
    """The index for ``n`` vectors of dimension ``d`` within the budgets (see module doc)."""
    if n < 1 or d < 1 or nshards < 1:
        raise SpecError(f"need n, d, nshards >= 1, got n={n} d={d} nshards={nshards}")
    if bytes_per_vector_budget <= 0 or max_query_ms <= 0:
        raise SpecError("bytes_per_vector_budget and max_query_ms must be > 0")
    if refine is not None and refine not in REFINE_BYTES_PER_DIM:
        raise SpecError(f"refine must be one of {sorted(REFINE_BYTES_PER_DIM)} or None")
    n_shard = math.ceil(n / nshards)
    budget = bytes_per_vector_budget
    flat_bytes, flat_ms = 4 * d + IDMAP2_BYTES, n_shard * d / FLAT_MACS_PER_MS
    if n < MIN_COMPRESSED_N or (flat_bytes <= budget and flat_ms <= max_query_ms):
        why = (
            f"{n} vectors: fewer than {MIN_COMPRESSED_N}, an exact index is small enough"
            if n < MIN_COMPRESSED_N
            else f"exact search fits: {flat_bytes} B/vector <= {budget:g}, "
            f"~{flat_ms:.2f} ms/query <= {max_query_ms:g}"
        )
        return IndexSpec(
            "IDMap2,Flat", metric, d, None, None, None, False, None, None, 0,
            flat_bytes, flat_bytes, (why,),
        )  # fmt: skip
    nbits = 4 if fast_scan else 8
    reasons = [
        f"exact search needs {flat_bytes} B/vector and ~{flat_ms:.2f} ms/query per shard; "
        f"budget {budget:g} B/vector, {max_query_ms:g} ms/query: compress"
    ]
    nlist = min(_pow2(4 * math.sqrt(n_shard)), MAX_NLIST, max(1, n // 39))
    d_ivf_max = min(d, 8 * 64)
    while (
        nlist > 8
        and nlist * (d_ivf_max * 4 + LIST_OVERHEAD_BYTES) > _CENTROID_SHARE * budget * n_shard
    ):
        nlist //= 2
    reasons.append(
        f"nlist={nlist}: ~4*sqrt({n_shard}) vectors per shard, halved while centroids "
        f"cost more than {_CENTROID_SHARE:.0%} of the budget"
    )
    best = None
    for m in range(min(d, 2 * int(budget)), 0, -1):
        if fast_scan and m % 2:
            continue
        dsub_max = 8 if fast_scan else 16
        d_ivf = m * max(1, min(d // m, dsub_max))
        if d_ivf < 0.75 * min(d, m * dsub_max):
            continue  # m divides d badly: OPQ would drop too many dimensions
        hnsw = nlist * d_ivf / FLAT_MACS_PER_MS > 0.25 * max_query_ms
        resident, disk = estimate_bytes(
            n_shard=n_shard, d=d, nlist=nlist, d_ivf=d_ivf, m=m, nbits=nbits,
            opq=True, hnsw=hnsw, refine=refine,
        )  # fmt: skip
        if resident <= 0.97 * budget:  # 3% margin for what the model does not count
            best = (m, d_ivf, hnsw, resident, disk)
            break
    if best is None:
        smallest = estimate_bytes(
            n_shard=n_shard, d=d, nlist=nlist, d_ivf=min(d, 8), m=2 if fast_scan else 1,
            nbits=nbits, opq=True, hnsw=False, refine=refine,
        )[0]  # fmt: skip
        raise SpecError(
            f"no IVF-PQ index of {n} x {d} fits {budget:g} B/vector (the smallest needs "
            f"~{smallest:.1f}); raise the budget, use more vectors per shard, or pass a factory"
        )
    m, d_ivf, hnsw, resident, disk = best
    opq = f"OPQ{m}_{d_ivf}" if d_ivf != d else f"OPQ{m}"
    ivf = f"IVF{nlist}_HNSW{HNSW_QUANTIZER_LINKS}" if hnsw else f"IVF{nlist}"
    pq = f"PQ{m}x4fsr" if fast_scan else f"PQ{m}x8"
    parts = [opq, ivf, pq]
    if refine:
        parts = ["IDMap", *parts, "RFlat" if refine == "Flat" else f"Refine({refine})"]
    reasons.append(
        f"{pq}: the largest PQ leaving resident bytes <= budget "
        f"({m * nbits // 8} B codes + {IVF_ID_BYTES + (IDMAP_ID_BYTES if refine else 0)} B ids "
        f"+ fixed costs = ~{resident:.1f} B/vector)"
        + (", 4-bit fast-scan: SIMD distance tables" if fast_scan else "")
    )
    reasons.append(
        f"{opq}: rotation balancing variance across sub-quantizers"
        + (f", {d} -> {d_ivf} dims" if d_ivf != d else "")
    )
    if hnsw:
        reasons.append(f"HNSW coarse quantizer: a flat scan of {nlist} centroids is too slow")
    if refine:
        reasons.append(
            f"Refine({refine}) of the top {k_factor}*k: restores recall; its "
            f"{REFINE_BYTES_PER_DIM[refine] * d} B/vector may be memory-mapped from disk"
        )
    reasons.append(f"metric {metric}" + (": normalised vectors" if metric == "ip" else ""))
    return IndexSpec(
        factory=",".join(parts),
        metric=metric,
        d=d,
        nlist=nlist,
        m=m,
        nbits=nbits,
        opq=True,
        refine=refine,
        k_factor=k_factor if refine else None,
        n_train=training_size(n, nlist, nbits, True),
        est_resident_bytes_per_vector=round(resident, 2),
        est_disk_bytes_per_vector=round(disk, 2),
        reasons=tuple(reasons),
    )


def spec_from_factory(
    factory: str, n: int, d: int, *, metric: Metric = "ip", k_factor: int = DEFAULT_K_FACTOR
) -> IndexSpec:
    """An explicit factory string (e.g. the seed's ``OPQ32,IVF4096,PQ32x8``), with an
    id-carrying wrapper added where the index cannot ``add_with_ids`` itself."""
    import faiss

    from vsearch.index.structure import describe, layers

    fmetric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    try:
        index = faiss.index_factory(d, factory, fmetric)
    except RuntimeError as e:
        raise SpecError(f"factory {factory!r} for d={d}: {str(e).splitlines()[-1]}") from None
    lay, reasons = layers(index), [f"explicit factory string {factory!r}"]
    if lay.idmap is None and (lay.refine is not None or lay.ivf is None):
        # IDMap2 keeps an id->position map (reconstruct by id) but costs RAM per vector;
        # a refined index is large already, so it gets the lean IDMap.
        wrapper = "IDMap" if lay.refine is not None else "IDMap2"
        factory = f"{wrapper},{factory}"
        reasons.append(f"wrapped in {wrapper}: the index cannot carry ids itself")
    info = describe(faiss.index_factory(d, factory, fmetric))
    nlist, nbits = info["nlist"], info["nbits"]
    return IndexSpec(
        factory=factory,
        metric=metric,
        d=d,
        nlist=nlist,
        m=info["m"],
        nbits=nbits,
        opq=info["opq"],
        refine=info["refine"],
        k_factor=k_factor if info["refine"] else None,
        n_train=training_size(n, nlist, nbits, info["opq"]) if nlist or nbits else 0,
        est_resident_bytes_per_vector=None,
        est_disk_bytes_per_vector=None,
        reasons=tuple(reasons),
    )
