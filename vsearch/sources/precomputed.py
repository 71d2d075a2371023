"""Precomputed embeddings as a source: ``.npy`` or Parquet files of vectors, with ids and
metadata.

The autofaiss / clip-retrieval workflow: the vectors were computed elsewhere,
and the run starts at the index. A source is one file or a directory of them (not
recursive). A Parquet file holds one row per item: an ``embedding`` column (a list of
floats), an optional ``id`` column (int64) and any other columns as metadata (``key``
and ``caption`` among them). Beside each ``NAME.npy``:

- ``NAME.ids.npy`` (optional): int64 item ids, one per row. Without it, an item's
  id comes from its key, as for images (``vsearch.ids``);
- ``NAME.meta.jsonl`` (optional): one JSON object per row (``key``, ``caption``,
  ``url``...). Without a ``key`` the item's key is ``NAME/ROW``;
- ``encoder.json`` (optional, in the directory): ``{"name", "model_id",
  "revision"}`` of the model that made the vectors. The manifest records it, and
  a query service whose encoder has that identity embeds text and images for
  this snapshot. Without it the encoder is ``precomputed``: vector queries only.

Partitions are ``partition_size`` rows of one file. Rows with a non-finite
value, a negative id or an id seen before in the partition are recorded as
failures with the reason; the rest go in. All files must have one dimension.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vsearch.manifest import EncoderInfo
from vsearch.sources.source_base import (
    Item,
    PartitionSpec,
    SourceError,
    check_spec,
    chunk_bounds,
    digest,
)

KIND = "vectors"
PRECOMPUTED = "precomputed"
_IDS, _META = ".ids.npy", ".meta.jsonl"


EMBEDDING_COLUMN, ID_COLUMN = "embedding", "id"


def is_vector_file(path: Path) -> bool:
    """A ``.npy`` file, or a Parquet file with an ``embedding`` column."""
    if path.suffix == ".npy":
        return not path.name.endswith(_IDS)
    return path.suffix == ".parquet" and EMBEDDING_COLUMN in _parquet_columns(path)


def is_vector_path(path: Path) -> bool:
    """A vector file, or a directory whose files include one: a vector source."""
    if path.is_file():
        return is_vector_file(path)
    return path.is_dir() and any(is_vector_file(p) for p in path.iterdir() if p.is_file())


def _parquet_columns(path: Path) -> list[str]:
    pq = _pyarrow_parquet(path)
    return list(pq.ParquetFile(path).schema_arrow.names)


def _pyarrow_parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - a dependency; a clear error if removed
        raise SourceError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    return pq


@dataclass(frozen=True)
class VectorRows:
    xb: np.ndarray  # (n, d) float32 or float16
    ids: np.ndarray | None  # (n,) int64 when the source gives ids
    keys: list[str]
    meta: list[dict[str, Any]]


class VectorSource:
    """Vectors from ``.npy`` files; see the module docstring."""

    def __init__(self, uri: str, path: Path, *, partition_size: int = 100_000) -> None:
        if partition_size <= 0:
            raise SourceError(f"partition size must be > 0, got {partition_size}")
        self.uri = uri
        self.root = path if path.is_dir() else path.parent
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        self.names = [p.name for p in files if not p.name.startswith(".") and is_vector_file(p)]
        if not self.names:
            raise SourceError(f"{uri}: no .npy or Parquet (with an embedding column) files")
        self.partition_size = partition_size

    def _vectors(self, name: str) -> np.ndarray:
        try:
            xb: np.ndarray = np.load(self.root / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise SourceError(f"{self.uri}: {name} is not a readable .npy file: {e}") from None
        if xb.ndim != 2 or xb.dtype not in (np.float32, np.float16, np.float64):
            raise SourceError(f"{self.uri}: {name} holds {xb.dtype} {xb.shape}, not (n, d) floats")
        return xb

    def _shape(self, name: str) -> tuple[int, int]:
        if name.endswith(".npy"):
            n, d = self._vectors(name).shape
            return int(n), int(d)
        pf = _pyarrow_parquet(self.root / name).ParquetFile(self.root / name)
        n = pf.metadata.num_rows
        first, _, _ = self._parquet_rows(name, 0, min(1, n)) if n else (np.zeros((0, 0)), 0, 0)
        return int(n), int(first.shape[1]) if n else 0

    def _parquet_rows(
        self, name: str, a: int, b: int
    ) -> tuple[np.ndarray, np.ndarray | None, list[dict[str, Any]]]:
        """Rows [a, b) of a Parquet file: vectors, ids (if an ``id`` column), metadata."""
        import pyarrow as pa  # type: ignore[import-not-found,unused-ignore]
        import pyarrow.compute as pc  # type: ignore[import-not-found,unused-ignore]

        table = _pyarrow_parquet(self.root / name).read_table(self.root / name).slice(a, b - a)
        column = table.column(EMBEDDING_COLUMN).combine_chunks()
        if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type):
            raise SourceError(f"{self.uri}: {name}: '{EMBEDDING_COLUMN}' is not a list of floats")
        lengths = set(pc.list_value_length(column).to_pylist())
        if len(lengths) > 1 or None in lengths:
            raise SourceError(f"{self.uri}: {name}: embeddings of different lengths {lengths}")
        d = lengths.pop() if lengths else 0
        flat = np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), np.float32)
        xb = flat.reshape(len(table), d)
        ids = None
        if ID_COLUMN in table.column_names:
            ids = np.asarray(table.column(ID_COLUMN).to_numpy(zero_copy_only=False), np.int64)
        rest = table.drop_columns([c for c in (EMBEDDING_COLUMN, ID_COLUMN)
                                   if c in table.column_names])  # fmt: skip
        return xb, ids, rest.to_pylist() if rest.num_columns else [{} for _ in range(len(xb))]

    def _version(self, name: str) -> list[Any]:
        """Size and mtime of the files a partition reads: a rewritten file is a new input."""
        stem = name.rsplit(".", 1)[0]
        out = []
        for file in (name, stem + _IDS, stem + _META, "encoder.json"):
            path = self.root / file
            if path.exists():
                st = path.stat()
                out.append([file, st.st_size, st.st_mtime_ns])
        return out

    def partitions(self) -> list[PartitionSpec]:
        specs: list[PartitionSpec] = []
        dims = set()
        for name in self.names:
            n, d = self._shape(name)
            dims.add(d)
            for a, b in chunk_bounds(n, self.partition_size):
                specs.append({"source": self.uri, "kind": KIND, "index": len(specs),
                              "file": name, "start": a, "stop": b})  # fmt: skip
        if len(dims) > 1:
            raise SourceError(f"{self.uri}: files of different dimensions {sorted(dims)}")
        return specs

    def fingerprint(self, spec: PartitionSpec) -> str:
        check_spec(spec, self.uri, KIND)
        return digest(spec, self._version(spec["file"]))

    def rows(self, spec: PartitionSpec) -> VectorRows:
        check_spec(spec, self.uri, KIND)
        name, a, b = spec["file"], spec["start"], spec["stop"]
        stem = name.rsplit(".", 1)[0]
        if name.endswith(".parquet"):
            xb, ids, meta = self._parquet_rows(name, a, b)
        else:
            xb = np.array(self._vectors(name)[a:b])
            ids = None
            if (self.root / (stem + _IDS)).exists():
                all_ids = np.load(self.root / (stem + _IDS), mmap_mode="r", allow_pickle=False)
                if all_ids.ndim != 1 or all_ids.dtype.kind not in "iu":
                    raise SourceError(f"{self.uri}: {stem}{_IDS} must be a 1-d integer array")
                ids = np.asarray(all_ids[a:b], dtype=np.int64)
            meta = self._meta(stem, a, b)
        if xb.dtype == np.float64:
            xb = xb.astype(np.float32)
        if (ids is not None and len(ids) != len(xb)) or len(meta) != len(xb):
            raise SourceError(f"{self.uri}: {stem}: ids/metadata rows do not match the vectors")
        keys = [str(m.get("key") or f"{stem}/{a + i}") for i, m in enumerate(meta)]
        return VectorRows(xb, ids, keys, meta)

    def _meta(self, stem: str, a: int, b: int) -> list[dict[str, Any]]:
        path = self.root / (stem + _META)
        if not path.exists():
            return [{} for _ in range(a, b)]
        rows: list[dict[str, Any]] = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= b:
                    break
                if i >= a:
                    value = json.loads(line) if line.strip() else {}
                    rows.append(value if isinstance(value, dict) else {"value": value})
        return rows

    def encoder_info(self) -> EncoderInfo:
        """The identity ``encoder.json`` names (or ``precomputed``), the vectors' dimension and
        whether they are unit vectors (judged on the first file's first 1,000 finite rows)."""
        first = self.names[0]
        if first.endswith(".parquet"):
            head = self._parquet_rows(first, 0, min(1000, self._shape(first)[0]))[0]
        else:
            head = np.asarray(self._vectors(first)[:1000], dtype=np.float32)
        dim = int(head.shape[1])
        head = head[np.isfinite(head).all(axis=1)]  # bad rows become failures, not evidence
        normalized = bool(np.allclose(np.linalg.norm(head, axis=1), 1.0, atol=1e-3))
        path = self.root / "encoder.json"
        if not path.exists():
            return EncoderInfo(PRECOMPUTED, PRECOMPUTED, digest(self.names)[:12], dim, normalized)
        try:
            given = json.loads(path.read_text())
            return EncoderInfo(str(given["name"]), str(given["model_id"]),
                               str(given.get("revision", "unknown")), dim, normalized)  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"{path}: expected {{name, model_id, revision}}: {e}") from None

    def items(self, spec: PartitionSpec) -> Iterator[Item]:
        raise SourceError(f"{self.uri}: precomputed vectors have no images to embed")
