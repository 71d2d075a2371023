"""Choosing the faiss index for a snapshot from its size and a memory and latency budget.

``choose_spec`` follows autofaiss's idea (the index that fits
``max_index_memory_usage`` and ``max_index_query_time_ms``) with an explicit
cost model (``vsearch.index.cost``), so the report can say why each number was
picked. Families, most exact first; the first that fits both budgets wins:

1. **exact** (``IDMap2,Flat``);
2. **IVF with float32 lists** (``IVF{nlist},Flat``): exact distances, a share of
   the lists scanned;
3. **IVF with 8-bit scalar-quantised lists** (``IVF{nlist},SQ8``): a byte per
   dimension; recall@10 of an exhaustive SQ8 scan is 0.995 on CIFAR-10
   EfficientNet vectors, so no re-ranking is needed;
4. **OPQ + IVF + PQ, 4-bit fast-scan**, re-ranked by an SQ8 copy of the vectors
   (``Refine(SQ8)``) that the service may memory-map from disk: the largest PQ
   whose codes and ids fit the per-vector budget.

The memory budget is ``max(bytes_per_vector x n, memory floor)`` resident bytes
(what must stay in RAM: codes, ids, centroids, rotation; the re-ranking codes
are reported apart, as disk bytes). The per-vector budget governs at scale; the
floor (default 256 MiB, about what the query service with its encoder holds
before any index) keeps small collections from being compressed, and absorbs
the fixed costs (centroids, OPQ matrix) that a few vectors cannot amortise.

The latency budget is ms per query and shard on one core. At its default it is
a target: when no family meets it, the fastest that fits memory is chosen and
the reasons say so (more shards cut it). Set to anything else it is a limit,
like the memory budget: when nothing fits, ``SpecError`` names the smallest
budget that would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from vsearch.config import Settings
from vsearch.index.cost import REFINE_BYTES_PER_DIM
from vsearch.index.families import MIB, Budget, Family, families, mib

Metric = Literal["ip", "l2"]

# The budgets' defaults are the settings' (vsearch.config). A process with the query
# service's modules and its EfficientNet-Lite0 encoder holds ~250 MiB before any index
# (bench/results/index_cost_model.md): an index smaller than the memory floor is never
# a reason to compress.
DEFAULT_BYTES_PER_VECTOR: Final = Settings.index_bytes_per_vector
DEFAULT_MAX_QUERY_MS: Final = Settings.index_max_query_ms
DEFAULT_MEMORY_FLOOR_MB: Final = Settings.index_memory_floor_mb
MAX_TRAIN = 500_000
# Re-ranking shortlist: k_factor * k candidates from the PQ scan. On Fashion-MNIST
# (784-d, 13 B of codes) recall@10 at nprobe 8 was 0.68 / 0.91 / 0.956 / 0.964 for
# k_factor 8 / 32 / 64 / 96, at ~0.5 ms/query for 64 (bench/index_bench.py).
DEFAULT_K_FACTOR = 64


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


def choose_spec(
    n: int,
    d: int,
    *,
    bytes_per_vector_budget: float = DEFAULT_BYTES_PER_VECTOR,
    max_query_ms: float = DEFAULT_MAX_QUERY_MS,
    memory_floor_mb: float = DEFAULT_MEMORY_FLOOR_MB,
    metric: Metric = "ip",
    nshards: int = 1,
    refine: str | None = "SQ8",
    fast_scan: bool = True,
    k_factor: int = DEFAULT_K_FACTOR,
) -> IndexSpec:
    """The index for ``n`` vectors of dimension ``d`` within the budgets (see module doc)."""
    if n < 1 or d < 1 or nshards < 1:
        raise SpecError(f"need n, d, nshards >= 1, got n={n} d={d} nshards={nshards}")
    if bytes_per_vector_budget <= 0 or max_query_ms <= 0 or memory_floor_mb < 0:
        raise SpecError(
            "bytes_per_vector_budget and max_query_ms must be > 0, memory_floor_mb >= 0"
        )
    if refine is not None and refine not in REFINE_BYTES_PER_DIM:
        raise SpecError(f"refine must be one of {sorted(REFINE_BYTES_PER_DIM)} or None")
    budget = Budget(n, nshards, bytes_per_vector_budget, max_query_ms, memory_floor_mb * MIB)
    strict = max_query_ms != DEFAULT_MAX_QUERY_MS  # the default is a target, not a limit

    def candidates(b: Budget) -> list[Family]:
        return families(n, d, b, refine=refine, fast_scan=fast_scan, k_factor=k_factor)

    reasons = [budget.describe()]
    chosen = None
    for c in candidates(budget):
        over = [
            what
            for what, ok in (("memory", budget.fits_memory(c.cost)),
                             ("latency", budget.fits_latency(c.cost)))
            if not ok
        ]  # fmt: skip
        if not over:
            chosen = c
            break
        reasons.append(f"not {c.name} ({c.factory}): {c.footprint(budget)}, over the "
                       + " and ".join(over) + " budget")  # fmt: skip
    verdict = "fits"
    if chosen is None:
        chosen, verdict = _fastest_or_raise(candidates, budget, strict, d), "is the fastest"
        reasons.append(
            f"no index meets the {max_query_ms:g} ms/query target by the model: {chosen.name} "
            "is the fastest that fits memory (more shards would cut the time)"
        )
    reasons += [f"{chosen.name} {verdict}: {chosen.footprint(budget)}", *chosen.reasons]
    reasons.append(f"metric {metric}" + (": normalised vectors" if metric == "ip" else ""))
    resident = chosen.cost.resident(n, nshards) / n
    return IndexSpec(
        factory=chosen.factory,
        metric=metric,
        d=d,
        nlist=chosen.nlist,
        m=chosen.m,
        nbits=chosen.nbits,
        opq=chosen.opq,
        refine=chosen.refine,
        k_factor=k_factor if chosen.refine else None,
        n_train=training_size(n, chosen.nlist, chosen.nbits, chosen.opq) if chosen.nlist else 0,
        est_resident_bytes_per_vector=round(resident, 2),
        est_disk_bytes_per_vector=round(resident + chosen.cost.disk_per_vector, 2),
        reasons=tuple(reasons),
    )


def _fastest_or_raise(
    candidates: Callable[[Budget], list[Family]], budget: Budget, strict: bool, d: int
) -> Family:
    """No family fits both budgets. With the latency budget at its default, the fastest
    family that fits memory; otherwise ``SpecError`` naming the smallest budgets that would."""

    def fits(b: Budget) -> bool:
        return any(
            b.fits_memory(c.cost) and (b.fits_latency(c.cost) or not strict) for c in candidates(b)
        )

    fit_memory = [c for c in candidates(budget) if budget.fits_memory(c.cost)]
    if fit_memory and not strict:
        return min(fit_memory, key=lambda c: c.cost.ms)
    n, b, t = budget.n, budget.bytes_per_vector, budget.max_query_ms
    need_b = _smallest(lambda x: fits(budget.replace(bytes_per_vector=x)), b, 4 * (2 * d + 64))
    need_floor = _smallest(lambda x: fits(budget.replace(floor=x * MIB)), 0.0,
                           4 * (2 * d + 64) * n / MIB)  # fmt: skip
    worst_ms = max(c.cost.ms for c in candidates(budget))
    need_t = _smallest(lambda x: fits(budget.replace(max_query_ms=x)), 0.0, 2 * worst_ms + t)
    shards = f" in {budget.nshards} shards" if budget.nshards > 1 else ""
    if not fit_memory:
        would = [f"{need_b:g} B/vector"] if need_b is not None else []
        if need_floor is not None:
            would.append(f"a memory floor of {need_floor:g} MiB")
        if strict and need_t is not None:
            would.append(f"{need_t:g} ms/query")
        raise SpecError(
            f"no index of {n} x {d}{shards} fits {b:g} B/vector ({mib(budget.memory)} with "
            f"the {mib(budget.floor)} floor)" + (f" and {t:g} ms/query" if strict else "")
            + ": the smallest budget that would fit is " + (" or ".join(would) or "none alone")
            + "; raise it, use more vectors per shard, or pass a factory"
        )  # fmt: skip
    fastest = min(fit_memory, key=lambda c: c.cost.ms)
    raise SpecError(
        f"no index of {n} x {d}{shards} answers within {t:g} ms/query (modelled, per shard) "
        f"in {b:g} B/vector: the smallest latency budget that would fit is {need_t:g} ms/query "
        f"({fastest.name})" + (f", or {need_b:g} B/vector" if need_b is not None else "")
        + "; raise it or use more shards"
    )  # fmt: skip


def _smallest(fits: Callable[[float], bool], lo: float, hi: float) -> float | None:
    """About the smallest x in (lo, hi] with ``fits(x)`` (bisection, then rounded up to
    3 significant digits and checked); None when even ``hi`` does not fit."""
    if not fits(hi):
        return None
    for _ in range(60):
        if hi - lo <= 1e-4 * hi:
            break
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    step = 10.0 ** (math.floor(math.log10(hi)) - 2)
    rounded = round(math.ceil(hi / step) * step, 10)
    return rounded if fits(rounded) else hi


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
