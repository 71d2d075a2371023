"""The index families ``choose_spec`` considers, each configured for one collection.

``families(n, d, budget)`` lists them most exact first: exact, IVF with float32
lists, IVF with 8-bit scalar-quantised lists, OPQ + IVF + PQ. Each comes with
its factory string, its cost (``vsearch.index.cost``) and the sentences that say
why each of its numbers was picked; ``choose_spec`` (``vsearch.index.spec``)
takes the first that fits the budget.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from vsearch.index.cost import (
    HNSW_QUANTIZER_LINKS,
    IDMAP_ID_BYTES,
    IVF_ID_BYTES,
    REFINE_BYTES_PER_DIM,
    Cost,
    exact_cost,
    ivf_cost,
    pq_cost,
    use_hnsw,
)

MIB = 2**20
MAX_NLIST = 1 << 16
CENTROID_SHARE = 0.2  # at most this share of the memory budget goes to centroids
MARGIN = 0.97  # 3% of the memory budget for what the model does not count


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:.3g} MiB"


@dataclass(frozen=True)
class Budget:
    """Resident memory: ``max(bytes_per_vector x n, floor)`` for all shards; latency:
    ``max_query_ms`` per query and shard on one core."""

    n: int
    nshards: int
    bytes_per_vector: float
    max_query_ms: float
    floor: float  # bytes

    @property
    def memory(self) -> float:
        return max(self.bytes_per_vector * self.n, self.floor)

    def fits_memory(self, cost: Cost) -> bool:
        return cost.resident(self.n, self.nshards) <= MARGIN * self.memory

    def fits_latency(self, cost: Cost) -> bool:
        return cost.ms <= self.max_query_ms

    def replace(self, **changes: float) -> Budget:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        return (
            f"budget: {mib(self.memory)} resident = max({self.bytes_per_vector:g} B/vector "
            f"x {self.n}, floor {mib(self.floor)}); {self.max_query_ms:g} ms/query per shard"
        )


@dataclass(frozen=True)
class Family:
    """One index family configured for a collection, with its cost and its reasons."""

    name: str
    factory: str
    cost: Cost
    nlist: int | None = None
    m: int | None = None
    nbits: int | None = None
    opq: bool = False
    refine: str | None = None
    reasons: tuple[str, ...] = ()

    def footprint(self, budget: Budget) -> str:
        nprobe = f" at nprobe ~{self.cost.nprobe}" if self.cost.nprobe else ""
        return (
            f"{mib(self.cost.resident(budget.n, budget.nshards))} resident, "
            f"~{self.cost.ms:.2f} ms/query{nprobe}"
        )


def families(
    n: int, d: int, budget: Budget, *, refine: str | None, fast_scan: bool, k_factor: int
) -> list[Family]:
    """Every family, most exact first, each configured for ``budget``."""
    n_shard = math.ceil(n / budget.nshards)
    return [
        Family("exact", "IDMap2,Flat", exact_cost(n_shard, d)),
        _ivf("Flat", n, n_shard, d, budget),
        _ivf("SQ8", n, n_shard, d, budget),
        _pq(n, n_shard, d, budget, refine, fast_scan, k_factor),
    ]


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def _nlist(n: int, n_shard: int, d_centroid: int, budget: Budget) -> tuple[int, str]:
    nlist = min(_pow2(4 * math.sqrt(n_shard)), MAX_NLIST, max(1, n // 39))
    per_list = d_centroid * 4 + 48
    while nlist > 8 and budget.nshards * nlist * per_list > CENTROID_SHARE * budget.memory:
        nlist //= 2
    return nlist, (
        f"nlist={nlist}: ~4*sqrt({n_shard}) vectors per shard (at most 1 per 39 vectors), "
        f"halved while centroids cost more than {CENTROID_SHARE:.0%} of the memory budget"
    )


def _hnsw_reason(nlist: int) -> str:
    return f"HNSW coarse quantizer: a flat scan of {nlist} centroids is too slow"


def _ivf(codes: str, n: int, n_shard: int, d: int, budget: Budget) -> Family:
    nlist, why_nlist = _nlist(n, n_shard, d, budget)
    hnsw = use_hnsw(nlist, d, budget.max_query_ms)
    cost = ivf_cost(n_shard, d, nlist, codes, hnsw)
    ivf = f"IVF{nlist}_HNSW{HNSW_QUANTIZER_LINKS}" if hnsw else f"IVF{nlist}"
    what = (
        "float32 lists: exact distances"
        if codes == "Flat"
        else "8-bit scalar-quantised lists: a byte per dimension (recall@10 of an exhaustive "
        "scan 0.995 on CIFAR-10 EfficientNet vectors: no re-ranking needed)"
    )
    reasons = [why_nlist, f"{codes}: {what}, {cost.per_vector:g} B/vector with ids"]
    if hnsw:
        reasons.append(_hnsw_reason(nlist))
    return Family(f"IVF-{codes}", f"{ivf},{codes}", cost, nlist=nlist, reasons=tuple(reasons))


def _pq(
    n: int, n_shard: int, d: int, budget: Budget, refine: str | None, fast_scan: bool, k: int
) -> Family:
    """The largest PQ whose codes and ids fit the per-vector budget and whose total
    (fixed costs included) fits the memory budget; the smallest PQ when none does."""
    nbits, dsub_max = (4, 8) if fast_scan else (8, 16)
    nlist, why_nlist = _nlist(n, n_shard, min(d, 8 * 64), budget)
    per_vector = MARGIN * budget.bytes_per_vector
    found = None
    for m in range(max(1, min(d, int(per_vector * 8 / nbits))), 0, -1):
        if fast_scan and m % 2:
            continue
        d_ivf = m * max(1, min(d // m, dsub_max))
        if d_ivf < 0.75 * min(d, m * dsub_max):
            continue  # m divides d badly: OPQ would drop too many dimensions
        hnsw = use_hnsw(nlist, d_ivf, budget.max_query_ms)
        cost = pq_cost(
            n_shard=n_shard, d=d, nlist=nlist, d_ivf=d_ivf, m=m, nbits=nbits, opq=True,
            hnsw=hnsw, refine=refine, k_factor=k,
        )  # fmt: skip
        found = (m, d_ivf, hnsw, cost)
        if cost.per_vector <= per_vector and budget.fits_memory(cost):
            break
    if found is None:  # d == 1: no even m for fast-scan
        nbits = 8
        cost = pq_cost(
            n_shard=n_shard, d=d, nlist=nlist, d_ivf=d, m=1, nbits=8, opq=True, hnsw=False,
            refine=refine, k_factor=k,
        )  # fmt: skip
        found = (1, d, False, cost)
    m, d_ivf, hnsw, cost = found
    opq = f"OPQ{m}_{d_ivf}" if d_ivf != d else f"OPQ{m}"
    ivf = f"IVF{nlist}_HNSW{HNSW_QUANTIZER_LINKS}" if hnsw else f"IVF{nlist}"
    pq = f"PQ{m}x4fsr" if nbits == 4 else f"PQ{m}x{nbits}"
    parts = [opq, ivf, pq]
    if refine:
        parts = ["IDMap", *parts, "RFlat" if refine == "Flat" else f"Refine({refine})"]
    ids = IVF_ID_BYTES + (IDMAP_ID_BYTES if refine else 0)
    reasons = [
        why_nlist,
        f"{pq}: the largest PQ whose {m * nbits / 8:g} B of codes + {ids} B of ids fit "
        f"{MARGIN:.0%} of {budget.bytes_per_vector:g} B/vector and whose total fits the "
        "memory budget" + (", 4-bit fast-scan: SIMD distance tables" if nbits == 4 else ""),
        f"{opq}: rotation balancing variance across sub-quantizers"
        + (f", {d} -> {d_ivf} dims" if d_ivf != d else ""),
    ]
    if hnsw:
        reasons.append(_hnsw_reason(nlist))
    if refine:
        reasons.append(
            f"Refine({refine}) of the top {k}*k: restores recall; its "
            f"{REFINE_BYTES_PER_DIM[refine] * d} B/vector may be memory-mapped from disk"
        )
    return Family(
        "IVF-PQ", ",".join(parts), cost, nlist=nlist, m=m, nbits=nbits, opq=True, refine=refine,
        reasons=tuple(reasons),
    )  # fmt: skip
