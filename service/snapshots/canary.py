"""The pre-swap canary: a snapshot that opens must also answer searches before it serves.

``run_canary`` searches a few of the snapshot's own stored vectors through the
searcher requests use, at the nprobe a request without options gets
(``default_nprobe``), and refuses the snapshot (``SnapshotRefused``) when a search
fails, returns ids no shard stores, or too few vectors find themselves.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from service.snapshots.refusal import SnapshotRefused
from vsearch.delta import parse_entry_id
from vsearch.manifest import Manifest
from vsearch.search import DeltaIndex, ShardSearcher, SnapshotSearcher
from vsearch.search.stored_vectors import VectorsUnavailable

log = logging.getLogger(__name__)

CANARY_QUERIES = 8  # stored vectors searched before a snapshot may serve (spread over shards)
CANARY_K = 10


def default_nprobe(manifest: Manifest, searcher: SnapshotSearcher) -> int | None:
    """The nprobe of a request that asks for none (None: no IVF, nothing to probe)."""
    return manifest.index.default_nprobe if searcher.nlist else None


def run_canary(searcher: SnapshotSearcher, manifest: Manifest) -> None:
    """Refuse a snapshot that opens but cannot search.

    A few stored vectors (spread over the shards) are searched exactly as a request
    without options is: through ``searcher`` (its fan-out, the shards' workers and
    SearchParameters) at the default nprobe, with an empty delta. Every search must
    return stored ids with finite scores; each vector must find itself in its top
    ``CANARY_K`` on exhaustive (flat) shards, at least half of them otherwise. Where
    the index cannot give its vectors back, seeded random queries check the rest.
    """
    nprobe = default_nprobe(manifest, searcher)
    at = f"at nprobe {nprobe}" if nprobe is not None else "at the index's own settings"
    probes = _canary_probes(searcher, manifest)
    delta = DeltaIndex(manifest.encoder.dim, manifest.metric)
    watermark = parse_entry_id(manifest.delta_watermark)
    found = asked = 0
    for item, x in probes:
        what = f"stored item {item}" if item is not None else "a random vector"
        try:
            hits = searcher.search(
                x[None], CANARY_K, nprobe=nprobe, delta=delta, watermark=watermark
            )
        except Exception as e:
            raise SnapshotRefused(
                f"canary: searching {what} {at} failed: {_faiss_reason(e)}"
            ) from None
        for h in hits:
            if not math.isfinite(h.score) or not any(h.id in s.stored for s in searcher.shards):
                raise SnapshotRefused(
                    f"canary: searching {what} {at} returned id {h.id} "
                    f"(score {h.score}), which no shard stores"
                )
        if item is not None:
            asked += 1
            found += any(h.id == item for h in hits)
    exhaustive = all(_exhaustive(s) for s in searcher.shards)
    needed = asked if exhaustive else math.ceil(asked / 2)
    if found < needed:
        raise SnapshotRefused(
            f"canary: {found} of {asked} stored vectors found themselves in their top "
            f"{CANARY_K} {at} (needed {needed})"
        )
    log.info("canary of %s: %d of %d found themselves", manifest.snapshot_id, found, asked)


def _canary_probes(
    searcher: SnapshotSearcher, manifest: Manifest
) -> list[tuple[int | None, np.ndarray]]:
    """(item, its stored vector) spread over the shards; (None, random) where unavailable."""
    shards = [s for s in searcher.shards if len(s.stored)]
    per_shard = max(1, math.ceil(CANARY_QUERIES / max(1, len(shards))))
    probes: list[tuple[int | None, np.ndarray]] = []
    missing = 0 if shards else 2
    for s in shards:
        rows = np.unique(np.linspace(0, len(s.stored) - 1, per_shard).astype("int64"))
        try:
            for item in s.stored.ids[rows].tolist():
                x = s.stored.vector(item)
                assert x is not None
                probes.append((item, x))
        except VectorsUnavailable:
            missing += len(rows)
    rng = np.random.default_rng(0)
    probes += [
        (None, rng.standard_normal(manifest.encoder.dim).astype("float32")) for _ in range(missing)
    ]
    if manifest.encoder.normalized:  # as requests are (service.api.request_vectors)
        probes = [(i, x / n if (n := float(np.linalg.norm(x))) > 0 else x) for i, x in probes]
    return [(i, np.ascontiguousarray(x, "float32")) for i, x in probes]


def _exhaustive(shard: ShardSearcher) -> bool:
    """Whether the shard's search is exact (flat storage, no IVF or refine)."""
    import faiss

    from vsearch.index.structure import layers

    lay = layers(shard.index)
    return lay.ivf is None and lay.refine is None and isinstance(lay.core, faiss.IndexFlat)


def _faiss_reason(e: BaseException) -> str:
    """faiss's messages open with the C++ signature and source line; keep the reason."""
    text = " ".join(str(e).split())
    found = re.search(r" at \S+:\d+: (.*)$", text)
    return found.group(1) if found else text
