"""Looking inside built faiss indexes: their layers, sizes and per-query parameters.

The shards this stage writes are nested faiss indexes, outermost first:
``IndexIDMap[2]`` (carries the ids when the inner index cannot), ``IndexRefine``
(re-ranks a shortlist with finer codes), ``IndexPreTransform`` (the OPQ
rotation), ``IndexIVF*`` (the coarse partition and the PQ codes). The query
service and the validator both need the same walk to set nprobe per request,
so it lives here, once.

faiss is imported inside the functions: this module is imported by the CLI.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vsearch.storage import ObjectInfo, ObjectStore


@dataclass
class Layers:
    """The faiss objects of one index, ``None`` where a layer is absent."""

    top: Any
    idmap: Any = None
    refine: Any = None
    pretransform: Any = None
    ivf: Any = None
    core: Any = None  # the innermost non-wrapper index (the IVF, or Flat/HNSW/PQ)


def layers(index: Any) -> Layers:
    import faiss

    found = Layers(top=index)
    cur = faiss.downcast_index(index)
    while True:
        if isinstance(cur, faiss.IndexIDMap | faiss.IndexIDMap2):
            found.idmap, cur = cur, faiss.downcast_index(cur.index)
        elif isinstance(cur, faiss.IndexRefine):
            found.refine, cur = cur, faiss.downcast_index(cur.base_index)
        elif isinstance(cur, faiss.IndexPreTransform):
            found.pretransform, cur = cur, faiss.downcast_index(cur.index)
        else:
            break
    found.core = cur
    found.ivf = faiss.try_extract_index_ivf(cur)
    return found


def describe(index: Any) -> dict[str, Any]:
    """The fields the manifest's ``index`` object needs, read from the index itself."""
    import faiss

    lay = layers(index)
    m = nbits = None
    pq = getattr(lay.core, "pq", None)
    if pq is not None:
        m, nbits = int(pq.M), int(pq.nbits)
    opq = False
    if lay.pretransform is not None:
        for i in range(lay.pretransform.chain.size()):
            vt = faiss.downcast_VectorTransform(lay.pretransform.chain.at(i))
            opq = opq or isinstance(vt, faiss.OPQMatrix)
    refine = None
    if lay.refine is not None:
        rcore = faiss.downcast_index(lay.refine.refine_index)
        sq = getattr(rcore, "sq", None)
        refine = "Flat" if isinstance(rcore, faiss.IndexFlat) else _sq_name(sq)
    hnsw_quantizer = lay.ivf is not None and isinstance(
        faiss.downcast_index(lay.ivf.quantizer), faiss.IndexHNSW
    )
    return {
        "nlist": int(lay.ivf.nlist) if lay.ivf is not None else None,
        "m": m,
        "nbits": nbits,
        "opq": opq,
        "refine": refine,
        "k_factor": float(lay.refine.k_factor) if lay.refine is not None else None,
        "hnsw_quantizer": hnsw_quantizer,
        "ids": "idmap" if lay.idmap is not None else "ivf" if lay.ivf is not None else None,
    }


def _sq_name(sq: Any) -> str:
    import faiss

    names = {faiss.ScalarQuantizer.QT_8bit: "SQ8", faiss.ScalarQuantizer.QT_fp16: "SQfp16"}
    if sq is None:
        return "unknown"
    return names.get(sq.qtype, f"SQ(qtype={sq.qtype})")


def refine_store_bytes(index: Any) -> int:
    """Bytes of the re-ranking codes: the part that may stay on disk, memory-mapped."""
    lay = layers(index)
    if lay.refine is None:
        return 0
    import faiss

    rindex: Any = faiss.downcast_index(lay.refine.refine_index)
    return int(rindex.ntotal) * int(rindex.code_size)


def search_params(index: Any, nprobe: int | None, k_factor: float | None = None) -> Any:
    """faiss SearchParameters setting ``nprobe`` (and the refine shortlist) for ``index``.

    None for an index without nprobe (Flat, HNSW). The nested objects are kept
    alive through the returned one: faiss holds raw pointers to them.
    """
    faiss: Any = importlib.import_module("faiss")  # its stubs lack some SearchParameters

    lay = layers(index)
    if lay.ivf is None or nprobe is None:
        return None
    params: Any = faiss.SearchParametersIVF()
    params.nprobe = int(nprobe)
    keep: list[Any] = []
    if isinstance(faiss.downcast_index(lay.ivf.quantizer), faiss.IndexHNSW):
        # The HNSW coarse quantizer must look at least nprobe candidates deep.
        qp = faiss.SearchParametersHNSW()
        qp.efSearch = max(64, 2 * int(nprobe))
        params.quantizer_params = qp
        keep.append(qp)
    if lay.pretransform is not None:
        outer = faiss.SearchParametersPreTransform()
        outer.index_params = params
        keep.append(params)
        params = outer
    if lay.refine is not None:
        outer = faiss.IndexRefineSearchParameters()
        outer.k_factor = float(k_factor if k_factor is not None else lay.refine.k_factor)
        outer.base_index_params = params
        keep.append(params)
        params = outer
    params.vsearch_keepalive = keep
    return params


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` OpenMP threads in faiss (None: leave as is)."""
    import faiss

    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def put_index(store: ObjectStore, key: str, index: Any) -> ObjectInfo:
    """Write ``index`` to ``key``: through a local temp file, so a big shard streams
    to the store (atomically, with its sha256) instead of being copied in memory."""
    import faiss

    with tempfile.TemporaryDirectory(prefix="vsearch-index-") as tmp:
        path = os.path.join(tmp, "index")
        faiss.write_index(index, path)
        return store.upload_file(path, key)


def get_index(store: ObjectStore, key: str, *, mmap: bool = False) -> Any:
    """Read the faiss index at ``key``: into memory, or (``mmap``) through a local copy
    whose re-ranking codes stay memory-mapped, as the query service loads shards."""
    import faiss
    import numpy as np

    if not mmap:
        return faiss.deserialize_index(np.frombuffer(store.get(key), dtype="uint8"))
    with tempfile.TemporaryDirectory(prefix="vsearch-index-") as tmp:
        path = os.path.join(tmp, "index")
        store.download_file(key, path)
        # The mapping outlives the file's name: removing the directory is safe.
        return faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
