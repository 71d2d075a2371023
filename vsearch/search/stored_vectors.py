"""``StoredVectors``: a shard's stored vector by id (``id`` queries, the load canary).

The id -> (inverted list, offset) lookup is built once per shard and cached as mapped
``.npy`` files beside the shard, so workers of a replica share it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np


class VectorsUnavailable(Exception):
    """The shard's index cannot give back its stored vectors (e.g. a non-invertible transform)."""


class StoredVectors:
    """The vector stored under each id of one shard, whatever the index's spec.

    faiss's own lookups do not cover the shards the pipeline writes: ``IndexIDMap``
    has no ``reconstruct`` and an IVF needs a direct map (a hash table of every id,
    built into the shared index). Here the ids are sorted once into one array
    (8 bytes per vector) beside where each vector lives (4 or 8 bytes), and a
    vector comes back from the finest codes the index holds: the refine index's
    (SQ8, or Flat) when there is one, else the IVF's own codes (rotated back
    through OPQ), else the flat storage, exactly.

    With ``cache`` (a path prefix beside the shard's cached file) the two arrays are
    written there once, as ``.npy`` files, and memory-mapped: every worker process on
    the host then shares one copy in the page cache instead of holding its own.
    """

    def __init__(self, index: Any, cache: Path | None = None) -> None:
        import faiss

        from vsearch.index.structure import layers

        lay = layers(index)
        self.d, n = int(index.d), int(index.ntotal)
        self._source: Any = None
        self._ivf: Any = None
        self._pretransform: Any = None
        if lay.ivf is not None and lay.refine is None:
            # The IVF's codes are the finest there are: find each one in its inverted list.
            self._ivf, self._pretransform = lay.ivf, lay.pretransform
        else:
            # Vectors are in insertion order below the id map: the refine index (whose
            # ``reconstruct`` IndexRefine forwards to), a flat index, an HNSW's storage.
            self._source = lay.top if lay.idmap is None else faiss.downcast_index(lay.idmap.index)
        mapped = None if cache is None else _load_lookup(cache, n)
        if mapped is not None:
            self.ids, self._where = mapped
            return
        id_map = None if lay.idmap is None else faiss.vector_to_array(lay.idmap.id_map)
        if id_map is not None and len(id_map) != n:
            raise ValueError(f"the id map holds {len(id_map)} ids for {n} vectors")
        if self._ivf is not None:
            inner, where = _inverted_list_entries(self._ivf)
            if len(inner) != n:
                raise ValueError(f"the inverted lists hold {len(inner)} of {n} vectors")
            ids = inner if id_map is None else id_map[inner]
        else:
            where = np.arange(n, dtype="int64")
            ids = where if id_map is None else id_map
        order = np.argsort(ids, kind="stable")
        self.ids = np.ascontiguousarray(ids[order], dtype="int64")
        located = where[order]
        self._where = located.astype("uint32") if located.max(initial=0) < 2**32 else located
        if cache is not None:
            _save_lookup(cache, self.ids, self._where)
            self.ids, self._where = _load_lookup(cache, n) or (self.ids, self._where)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self._where.nbytes)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: int) -> bool:
        return self._row(item) is not None

    def vector(self, item: int) -> np.ndarray | None:
        """The stored vector of ``item`` (float32, shape (d,)), None when it is not here."""
        row = self._row(item)
        if row is None:
            return None
        where = int(self._where[row])
        x = np.empty(self.d, dtype="float32")
        try:
            if self._ivf is None:
                self._source.reconstruct(where, x)
            else:
                self._from_inverted_list(where >> 32, where & 0xFFFFFFFF, x)
        except RuntimeError as e:
            raise VectorsUnavailable(f"cannot reconstruct stored vectors: {e}") from None
        return x

    def _row(self, item: int) -> int | None:
        row = int(np.searchsorted(self.ids, item))
        return row if row < len(self.ids) and int(self.ids[row]) == item else None

    def _from_inverted_list(self, list_no: int, offset: int, x: np.ndarray) -> None:
        import faiss

        assert self._ivf is not None
        if self._pretransform is None:
            self._ivf.reconstruct_from_offset(list_no, offset, faiss.swig_ptr(x))
            return
        xt = np.empty(int(self._ivf.d), dtype="float32")
        self._ivf.reconstruct_from_offset(list_no, offset, faiss.swig_ptr(xt))
        self._pretransform.reverse_chain(1, faiss.swig_ptr(xt), faiss.swig_ptr(x))


def _lookup_paths(cache: Path) -> tuple[Path, Path]:
    return cache.with_name(cache.name + ".ids.npy"), cache.with_name(cache.name + ".where.npy")


def _load_lookup(cache: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (ids, where) arrays, memory-mapped; None when absent or not for ``n`` rows."""
    try:
        ids, where = (np.load(p, mmap_mode="r") for p in _lookup_paths(cache))
    except (OSError, ValueError):
        return None
    if ids.shape != (n,) or where.shape != (n,) or ids.dtype != np.int64:
        return None
    return ids, where


def _save_lookup(cache: Path, ids: np.ndarray, where: np.ndarray) -> None:
    """Write both arrays atomically (tmp file, then rename): workers may race to write."""
    for path, array in zip(_lookup_paths(cache), (ids, where), strict=True):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        tmp.replace(path)


def _inverted_list_entries(ivf: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every entry of an IVF's inverted lists: its id there, and ``list_no << 32 | offset``."""
    import faiss

    invlists, ids, where = ivf.invlists, [], []
    for list_no in range(int(ivf.nlist)):
        n = int(invlists.list_size(list_no))
        if n == 0:
            continue
        ptr = invlists.get_ids(list_no)
        try:
            ids.append(faiss.rev_swig_ptr(ptr, n).astype("int64", copy=True))
        finally:
            invlists.release_ids(list_no, ptr)
        where.append((np.int64(list_no) << 32) | np.arange(n, dtype="int64"))
    if not ids:
        return np.empty(0, "int64"), np.empty(0, "int64")
    return np.concatenate(ids), np.concatenate(where)
