"""Typed settings from keyword arguments and ``VSEARCH_*`` environment variables.

Precedence: keyword arguments, then the environment, then the embedded defaults.
The embedded defaults need no server at all: everything lives under one data
directory (``VSEARCH_DATA_DIR``, default ``./vsearch-data``) — the object store as a
plain directory, the delta log and the metadata as SQLite files, a local cache.

    >>> s = Settings.load(data_dir="/tmp/x")
    >>> s.store
    '/tmp/x/store'
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "VSEARCH_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    """Every knob of vsearch, one field each; ``VSEARCH_<FIELD>`` sets it from the environment.

    Fields left as ``""`` are derived from ``data_dir`` when loaded.
    """

    data_dir: str = "./vsearch-data"
    # Object store: a local directory path, ``file:///abs/path`` or ``s3://bucket[/prefix]``.
    store: str = ""
    # S3-compatible endpoint (MinIO, moto); empty means AWS. Credentials come from the
    # usual boto3 chain (env, profile, instance role), never from here.
    s3_endpoint_url: str = ""
    s3_region: str = ""
    # Objects at least this big are uploaded in parts, in parallel.
    s3_multipart_threshold_mb: int = 64
    s3_max_attempts: int = 8
    # Delta log and metadata: ``sqlite:///path`` (embedded) or ``redis://host:port/db``.
    delta_log: str = ""
    metadata_db: str = ""
    # Local cache of downloaded shards (the service) and scratch space (the pipeline).
    cache_dir: str = ""
    # API key for the write endpoints of the service; empty disables writes.
    api_key: str = field(default="", repr=False)
    # --- embedding stage (sources, decoding, encoders) ---
    # Encoder spec for `vsearch embed` (vsearch.encoders.load_encoder).
    encoder: str = "efficientnet-lite0"
    # Torch device for the encoder: empty picks CUDA when present, else CPU.
    device: str = ""
    embed_batch_size: int = 64
    # Decode threads beside the model; 0 means one per CPU core (at most 16).
    embed_workers: int = 0
    # Stored vector precision: float32, or float16 (half the disk, same index).
    embed_dtype: str = "float32"
    # Image files per partition (directories, prefixes of loose images).
    partition_size: int = 10000
    # URL lists: rows per shard, parallel downloads, per-read timeout, retries,
    # largest download accepted, longer side of the stored JPEG.
    fetch_shard_size: int = 10000
    fetch_concurrency: int = 16
    fetch_timeout_s: float = 10.0
    fetch_retries: int = 2
    fetch_max_mb: int = 20
    fetch_max_side: int = 512
    # --- index stage (spec, training, shards, recall gate) ---
    # Explicit faiss factory string (e.g. "OPQ32,IVF4096,PQ32x8"); empty: chosen from
    # the budgets below (vsearch.index.choose_spec).
    index_factory: str = ""
    # Resident RAM per vector (re-ranking codes may stay on disk, memory-mapped) and
    # per-query time on one core that the chosen index must fit.
    index_bytes_per_vector: float = 48.0
    index_max_query_ms: float = 1.0
    # Resident MiB (all shards) under which memory is never a reason to compress: about
    # what the service with its query encoder takes before any index. 0: the per-vector
    # budget holds at every size.
    index_memory_floor_mb: float = 256.0
    index_nshards: int = 1
    # The gate: recall@10 at the default nprobe, for image->image and text->image.
    index_target_recall: float = 0.95
    index_seed: int = 0
    # Where k-means runs: auto (GPU when faiss sees one), cpu or gpu.
    index_device: str = "auto"
    # --- query service ---
    # Encoder spec for text/image queries (vsearch.encoders.load_encoder); empty: the
    # encoder the first served snapshot was built with, loaded on the first image or text
    # query when its weights are loadable (vector queries need none).
    query_encoder: str = ""
    # Bounds on requests: k, request body size, upsert batch size, fetched image size/time.
    max_k: int = 100
    default_k: int = 10
    max_request_mb: float = 16.0
    max_upsert_items: int = 1000
    image_fetch_max_mb: float = 10.0
    image_fetch_timeout_s: float = 5.0
    # Image-URL hosts trusted beside public addresses, comma-separated: exact host names
    # (allowed to resolve to private addresses) and CIDRs (any name resolving into them).
    image_fetch_allow: str = ""
    # Image-URL fetches and image decodes run at once per process (more answer 503 at once,
    # so that vector and id searches never wait behind them); 0: a quarter of
    # service_threads (at least 2) fetches, half the cores (at least 1) decodes.
    image_fetch_concurrency: int = 0
    image_decode_concurrency: int = 0
    # Query-embedding cache for text and image URLs: "" (Redis when metadata_db is Redis,
    # else an in-process LRU), "memory", "off" or a redis:// URL.
    query_cache: str = ""
    query_cache_ttl_s: int = 3600
    # Dynamic batching of query encoding (service/queries/query_batcher.py): at most this many
    # concurrent text or image queries share one encoder call (0: 32 for an encoder on a
    # GPU, none on a CPU, where it measured no gain; 1: never), and a call waits at most
    # this long for queries still being decoded (not at all when none are).
    query_batch_max: int = 0
    query_batch_wait_ms: float = 2.0
    # Thumbnails (GET /v1/items/{id}/thumbnail) kept in memory per process, by size.
    thumbnail_cache_mb: int = 32
    # Seconds between polls of CURRENT; 0 disables the watcher.
    watch_interval_s: float = 5.0
    # Largest snapshot the service loads, counted as resident (private bytes plus the mapped
    # bytes every search reads; docs/service.md); 0: half the machine's memory.
    memory_budget_mb: int = 0
    # Worker threads per shard, and how many queued queries one faiss call may take
    # (1: no micro-batching; measured no consistent gain, see docs/service.md).
    shard_threads: int = 2
    max_batch: int = 1
    # Name this replica records its served watermark under (default: hostname-pid).
    replica_id: str = ""
    # The HTTP server (service/server.py, waitress): address, processes, request threads.
    service_bind: str = "127.0.0.1:8000"
    service_workers: int = 1
    service_threads: int = 8
    # The access log: "-" (stdout), a file path, or "" for none; it never holds a credential.
    service_access_log: str = "-"
    # --- orchestration (Airflow DAGs and plugin; read when the DAG files are parsed) ---
    # Default sources of the build DAG, comma-separated (a run's params override them).
    sources: str = ""
    # Celery queue and Airflow pool of the GPU tasks (embedding, training).
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
    # Slots of that pool: how many GPU tasks run at once (one per GPU; on a CPU-only
    # machine one, so that embedding gets every core).
    gpu_pool_slots: int = 1
    build_schedule: str = "@daily"
    # Seconds before a failed task's first retry (Airflow doubles it for each later one).
    retry_delay_s: float = 60.0
    compact_schedule: str = "@hourly"
    # Where the publish task's "Live manifest" link points: the query service's URL.
    service_url: str = "http://localhost:8000"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``overrides``, then ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name in names:
            env_name = ENV_PREFIX + name.upper()
            if name in overrides and overrides[name] is not None:
                raw, origin = overrides[name], f"keyword argument {name!r}"
            elif env_name in env:
                raw, origin = env[env_name], f"environment variable {env_name}"
            else:
                continue
            values[name] = _coerce(raw, hints[name], origin)
        return cls(**values)._with_derived_defaults()

    def _with_derived_defaults(self) -> Settings:
        root = self.data_dir.rstrip("/") or "."
        return dataclasses.replace(
            self,
            store=self.store or f"{root}/store",
            delta_log=self.delta_log or f"sqlite:///{os.path.abspath(root)}/delta.sqlite3",
            metadata_db=self.metadata_db or f"sqlite:///{os.path.abspath(root)}/metadata.sqlite3",
            cache_dir=self.cache_dir or f"{root}/cache",
        )


def _coerce(raw: Any, hint: Any, origin: str) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw == ""):
            return None
        hint = args[0]
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{origin}: expected a boolean (true/false), got {raw!r}")
    if hint in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{origin}: expected {hint.__name__}, got {raw!r}")
        try:
            return hint(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{origin}: expected {hint.__name__}, got {raw!r}") from None
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{origin}: expected a string, got {type(raw).__name__}")
        return raw
    raise ConfigError(f"{origin}: unsupported setting type {hint!r}")  # pragma: no cover
