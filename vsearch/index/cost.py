"""The cost model behind ``choose_spec``: resident bytes and milliseconds per query.

Each index family ``choose_spec`` considers is costed the same way:

- **resident bytes**: what grows with every vector (codes, ids) plus what a shard
  pays once (centroids, the OPQ rotation, codebooks, list headers, the HNSW graph
  over the centroids). Re-ranking codes are counted apart, as bytes that may stay
  on disk (the service memory-maps them);
- **ms per query** on one core, one query at a time: the coarse quantizer, the
  share of the lists an nprobe reaching the recall target scans, the OPQ
  rotation, the re-ranking of the shortlist.

The rates were measured on the project's 2-core VM, one thread, one query at a
time (``bench/index_cost_model.py``, results in bench/results/index_cost_model.md);
they err on the slow side, so the model leaves exact search a little early
rather than late. The validator measures the real figures of the index built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Multiply-adds per ms over float32 vectors, one query, one core: a brute-force
# scan of 30k down to 3k x 1280 measured 5.3e6 to 1.3e7 on an idle core, 2.5e6 to
# 5e6 beside another job: the model takes a busy core's rate.
FLAT_MACS_PER_MS = 4e6
# Dimensions per ms over 8-bit scalar-quantised codes (IVF lists, one query):
# measured 7.5e6-1.1e7 idle, 5.3e6-6.3e6 busy, on CIFAR-10 EfficientNet vectors.
SQ8_DIMS_PER_MS = 5e6
# 4-bit fast-scan PQ codes scanned per ms into a shortlist of 64*10: measured 2.4e5
# (m=60) to 2.9e5 (m=20), 200k x 480, IVF1024: the SIMD kernel and the shortlist's
# heap, more than m, set the pace.
FASTSCAN_CODES_PER_MS = 3e5
# nprobe that reaches recall@10 0.95 on real image embeddings: ~2*sqrt(nlist)
# (CIFAR-10 EfficientNet-Lite0, IVF-SQ8: 32 of 256 lists at 10k, 64 of 1024 at 60k).
NPROBE_PER_SQRT_NLIST = 2.0
# Distance computations of one HNSW32 search over the centroids (efSearch 64):
# measured 225 (1,024 CIFAR centroids) to 574 (4,096); random centroids cost more.
HNSW_QUANTIZER_DISTANCES = 1024
HNSW_QUANTIZER_LINKS = 32
IVF_ID_BYTES = 8  # faiss inverted lists store int64 ids
IDMAP_ID_BYTES = 8  # IndexIDMap's id table (IndexRefine cannot carry ids itself)
IDMAP2_BYTES = 8 + 48  # IndexIDMap2 also keeps an unordered_map id -> position in RAM
LIST_OVERHEAD_BYTES = 48  # two std::vector headers per inverted list
REFINE_BYTES_PER_DIM = {"SQ8": 1, "SQfp16": 2, "Flat": 4}
RESULTS_K = 10  # the k the latency is modelled for (the gate's recall@10)


@dataclass(frozen=True)
class Cost:
    """What one shard of a family costs."""

    per_vector: float  # resident bytes per vector: codes and ids
    fixed: float  # resident bytes per shard, whatever its size
    disk_per_vector: float  # re-ranking codes: may be memory-mapped from disk
    ms: float  # per query and shard, one core
    nprobe: int | None  # the nprobe ``ms`` assumes

    def resident(self, n: int, nshards: int) -> float:
        """Resident bytes of all ``nshards`` shards holding ``n`` vectors in total."""
        return self.per_vector * n + self.fixed * nshards


def expected_nprobe(nlist: int) -> int:
    return min(nlist, math.ceil(NPROBE_PER_SQRT_NLIST * math.sqrt(nlist)))


def use_hnsw(nlist: int, d_ivf: int, max_query_ms: float) -> bool:
    """An HNSW coarse quantizer once a flat scan of the centroids takes a quarter of the
    latency budget and visits at least twice the centroids the graph would."""
    flat_ms = nlist * d_ivf / FLAT_MACS_PER_MS
    return flat_ms > 0.25 * max_query_ms and nlist > 2 * HNSW_QUANTIZER_DISTANCES


def _quantizer(nlist: int, d_ivf: int, hnsw: bool) -> tuple[float, float]:
    """(resident bytes, ms) of the coarse quantizer."""
    nbytes = float(nlist * (d_ivf * 4 + LIST_OVERHEAD_BYTES))
    if hnsw:
        nbytes += nlist * HNSW_QUANTIZER_LINKS * 2 * 4 * 1.1  # level-0 links, +10% above
        return nbytes, HNSW_QUANTIZER_DISTANCES * d_ivf / FLAT_MACS_PER_MS
    return nbytes, nlist * d_ivf / FLAT_MACS_PER_MS


def exact_cost(n_shard: int, d: int) -> Cost:
    """``IDMap2,Flat``: every vector as float32, scanned in full."""
    return Cost(4 * d + IDMAP2_BYTES, 0.0, 0.0, n_shard * d / FLAT_MACS_PER_MS, None)


def ivf_cost(n_shard: int, d: int, nlist: int, codes: str, hnsw: bool) -> Cost:
    """``IVF{nlist},Flat`` or ``IVF{nlist},SQ8``: full-dimension lists, no re-ranking."""
    nprobe = expected_nprobe(nlist)
    q_bytes, q_ms = _quantizer(nlist, d, hnsw)
    scanned = nprobe * n_shard / nlist * d
    if codes == "Flat":
        per_vector, fixed, scan_ms = 4 * d, q_bytes, scanned / FLAT_MACS_PER_MS
    else:  # SQ8: a byte per dimension; the trained per-dimension range is 2 floats
        per_vector, fixed, scan_ms = d, q_bytes + 8 * d, scanned / SQ8_DIMS_PER_MS
    resident = per_vector + IVF_ID_BYTES
    return Cost(resident, fixed, 0.0, q_ms + scan_ms, nprobe)


def pq_cost(
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
    k_factor: int,
) -> Cost:
    """OPQ + IVF + PQ (4-bit fast-scan or 8-bit), optionally re-ranked."""
    code = m * nbits / 8
    q_bytes, q_ms = _quantizer(nlist, d_ivf, hnsw)
    fixed = q_bytes + 2**nbits * d_ivf * 4
    ms = q_ms
    if opq:
        fixed += d * d_ivf * 4
        ms += d * d_ivf / FLAT_MACS_PER_MS
    if nbits == 4:  # fast-scan pads each list to blocks of 32 codes: half a block wasted
        fixed += nlist * 16 * code
    nprobe = expected_nprobe(nlist)
    codes = nprobe * n_shard / nlist
    ms += codes / FASTSCAN_CODES_PER_MS if nbits == 4 else codes * m / FLAT_MACS_PER_MS
    disk = 0.0
    if refine:
        disk = REFINE_BYTES_PER_DIM[refine] * d
        rate = SQ8_DIMS_PER_MS if refine.startswith("SQ") else FLAT_MACS_PER_MS
        ms += k_factor * RESULTS_K * d / rate
    ids = IVF_ID_BYTES + (IDMAP_ID_BYTES if refine else 0)
    return Cost(code + ids, fixed, disk, ms, nprobe)
