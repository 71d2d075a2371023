"""One function per DAG task: JSON-able arguments in, JSON-able results out.

Airflow's tasks (dags/), the ``vsearch`` CLI and the tests call these. Each
takes the object store and the run's snapshot id; arrays never travel between
tasks, only object keys and small dicts. Everything a later task needs is in
the store, keyed by the snapshot id, so a retry or a rerun of the same date
recomputes nothing that is already committed and rewrites the same keys.

The build record ``indexes/{snapshot}/build.json`` is written by the first
task of a run and read by the publish task: which sources, which encoder
(name, model, revision, dim), which snapshot was live when the run started and
which delta watermark the snapshot folds in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from vsearch.manifest import EncoderInfo, Lineage
from vsearch.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


class PipelineError(RuntimeError):
    """A run cannot go on (no sources, no partitions, a missing build record)."""


def build_record_key(snapshot_id: str) -> str:
    return f"indexes/{snapshot_id}/build.json"


def write_build_record(store: ObjectStore, snapshot_id: str, record: dict[str, Any]) -> None:
    """Write the run's build record; deterministic bytes, so a retry rewrites it unchanged."""
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    _put_if_changed(store, build_record_key(snapshot_id), data)


def _put_if_changed(store: ObjectStore, key: str, data: bytes) -> None:
    """A retry that computes the same bytes leaves the object (and its etag) untouched."""
    try:
        if store.get(key) == data:
            return
    except ObjectNotFound:
        pass
    store.put(key, data)


def read_build_record(store: ObjectStore, snapshot_id: str) -> dict[str, Any]:
    try:
        return dict(json.loads(store.get(build_record_key(snapshot_id))))
    except ObjectNotFound:
        raise PipelineError(
            f"{build_record_key(snapshot_id)} is missing: plan the run before this step"
        ) from None


# --- embedding ---------------------------------------------------------------


def plan_partitions(
    store: ObjectStore,
    snapshot_id: str,
    sources: list[str],
    partition_size: int,
    encoder_spec: str,
    run: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The run's partitions over all sources, numbered 0, 1, 2… across them.

    Each task dict is ``{"partition": i, "source": uri, "spec": <the source's own spec>}``.
    ``run`` ({dag_id, run_id}) goes into the lineage; a rerun keeps the first run's,
    so that it publishes the identical (immutable) manifest.
    """
    from vsearch.sources import open_source

    if not sources:
        raise PipelineError("no sources: pass params.sources (or set VSEARCH_SOURCES)")
    tasks: list[dict[str, Any]] = []
    for uri in sources:
        source = open_source(uri, store=store, **_source_options(uri, partition_size))
        for spec in source.partitions():
            tasks.append({"partition": len(tasks), "source": uri, "spec": spec,
                          "options": _source_options(uri, partition_size)})  # fmt: skip
    from vsearch.index import previous_snapshot_for

    previous = previous_snapshot_for(store, snapshot_id)
    write_build_record(store, snapshot_id, {
        "kind": "build",
        "sources": list(sources),
        "encoder_spec": encoder_spec,
        "partitions": len(tasks),
        # The newest older snapshot when this run was planned (rollback goes there);
        # a rerun keeps the first answer, so it publishes the identical manifest.
        "previous_snapshot_id": _kept(store, snapshot_id, "previous_snapshot_id", previous),
        "run": _kept(store, snapshot_id, "run", run or {}),
        "delta_watermark": "0-0",
    })  # fmt: skip
    log.info("%s: %d partitions from %d sources", snapshot_id, len(tasks), len(sources))
    return tasks


def _kept(store: ObjectStore, snapshot_id: str, field: str, fresh: Any) -> Any:
    try:
        return read_build_record(store, snapshot_id).get(field, fresh)
    except PipelineError:
        return fresh


def _source_options(uri: str, partition_size: int) -> dict[str, Any]:
    from vsearch.sources.urls import LIST_SUFFIXES

    if uri.split("?", 1)[0].lower().endswith(LIST_SUFFIXES):
        return {"shard_size": partition_size}
    return {"partition_size": partition_size}


def fetch_partition(store: ObjectStore, snapshot_id: str, task: dict[str, Any]) -> dict[str, Any]:
    """Download a URL-list shard into the store once; other sources pass through."""
    from vsearch.sources import fetch_partition as fetch_shard

    if task["spec"].get("kind") == "urls":
        stats = fetch_shard(store, task["source"], task["spec"], **task["options"])
        log.info("fetched %s: %s ok, %s failed", task["source"], stats["ok"], stats["failed"])
    return task


@lru_cache(maxsize=2)
def _encoder(spec: str) -> Any:
    from vsearch.encoders import load_encoder

    return load_encoder(spec)


def embed_partition(
    store: ObjectStore, snapshot_id: str, task: dict[str, Any], encoder_spec: str
) -> dict[str, Any]:
    """Embed one partition (a no-op when it is already committed with the same input)."""
    from vsearch.embed import embed_partition as embed
    from vsearch.sources import open_source

    source = open_source(task["source"], store=store, **task["options"])
    encoder = _encoder(encoder_spec)
    record = embed(
        store, snapshot_id, int(task["partition"]), source.items(task["spec"]), encoder,
        input_fingerprint=source.fingerprint(task["spec"]),
    )  # fmt: skip
    write_encoder_info(store, snapshot_id, encoder.info)
    return {"partition": record.index, "count": record.count, "failures": record.failures}


def encoder_info_key(snapshot_id: str) -> str:
    return f"embeddings/{snapshot_id}/encoder.json"


def write_encoder_info(store: ObjectStore, snapshot_id: str, info: EncoderInfo) -> None:
    data = (json.dumps(asdict(info), sort_keys=True) + "\n").encode()
    _put_if_changed(store, encoder_info_key(snapshot_id), data)


def read_encoder_info(store: ObjectStore, snapshot_id: str) -> EncoderInfo:
    try:
        return EncoderInfo(**json.loads(store.get(encoder_info_key(snapshot_id))))
    except ObjectNotFound:
        raise PipelineError(f"{snapshot_id}: no embedded partition yet") from None


def lineage(store: ObjectStore, snapshot_id: str) -> Lineage:
    from vsearch.partitions import list_partitions, read_record

    items = failures = 0
    for i in list_partitions(store, snapshot_id):
        record = read_record(store, snapshot_id, i)
        assert record is not None
        items, failures = items + record.count, failures + record.failures
    build = read_build_record(store, snapshot_id)
    run = build.get("run") or {}
    return Lineage(
        dag_id=run.get("dag_id"),
        run_id=run.get("run_id"),
        sources=tuple(build.get("sources", ())),
        item_count=items,
        failures=failures,
    )


# --- index -------------------------------------------------------------------


def train_index(
    store: ObjectStore,
    snapshot_id: str,
    partitions: list[dict[str, Any]],
    *,
    factory: str | None,
    bytes_per_vector: float,
    nshards: int = 1,
) -> str:
    """Train on the committed partitions (a no-op when already trained on the same input)."""
    from vsearch.index import train_index as train

    if not partitions:
        raise PipelineError(f"{snapshot_id}: no partition was embedded")
    return train(store, snapshot_id, factory=factory, bytes_per_vector_budget=bytes_per_vector,
                 nshards=nshards)  # fmt: skip


def build_shard(store: ObjectStore, snapshot_id: str, shard: int, nshards: int) -> dict[str, Any]:
    from vsearch.index import build_shard as build

    return build(store, snapshot_id, shard, nshards)


def validate_snapshot(
    store: ObjectStore, snapshot_id: str, *, target_recall: float, nshards: int | None = None
) -> str:
    """The recall gate; raises ``RecallGateFailed`` (nothing is published then).

    With a text tower (CLIP), captions of held-out items are embedded as the
    text->image queries first.
    """
    from vsearch.index import validate_snapshot as validate

    info = read_encoder_info(store, snapshot_id)
    has_text = _write_caption_queries(store, snapshot_id)
    log.info("%s: validating (%s, text queries: %s)", snapshot_id, info.name, has_text)
    return validate(store, snapshot_id, target_recall=target_recall, require_text=has_text,
                    nshards=nshards)  # fmt: skip


MAX_TEXT_QUERIES = 1000


def _write_caption_queries(store: ObjectStore, snapshot_id: str) -> bool:
    """Embed up to MAX_TEXT_QUERIES captions when the encoder has a text tower."""
    import numpy as np

    from vsearch.index import write_text_queries
    from vsearch.partitions import list_partitions, read_partition

    build = read_build_record(store, snapshot_id)
    spec = build.get("encoder_spec")
    encoder = _encoder(spec) if spec else None
    if encoder is None or not encoder.has_text:
        return False
    captions: list[str] = []
    for i in list_partitions(store, snapshot_id):
        _, _, meta = read_partition(store, snapshot_id, i)
        captions += [m["caption"] for m in meta if m.get("caption")]
        if len(captions) >= MAX_TEXT_QUERIES:
            break
    if not captions:
        return False
    xq = np.asarray(encoder.encode_texts(captions[:MAX_TEXT_QUERIES]), dtype=np.float32)
    write_text_queries(store, snapshot_id, xq)
    return True


def publish_snapshot(
    store: ObjectStore, snapshot_id: str, *, run: dict[str, str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Assemble the manifest and move CURRENT (see ``vsearch.snapshots.publish_snapshot``)."""
    from vsearch.index import publish_built_snapshot

    build = read_build_record(store, snapshot_id)
    result = publish_built_snapshot(
        store,
        snapshot_id,
        encoder=read_encoder_info(store, snapshot_id),
        lineage=lineage(store, snapshot_id),
        previous_snapshot_id=build.get("previous_snapshot_id"),
        delta_watermark=build.get("delta_watermark", "0-0"),
        force=force,
    )
    return asdict(result)


# --- compaction --------------------------------------------------------------


def delta_backlog(store: ObjectStore) -> int:
    """Delta entries beyond what the live snapshot folded in."""
    from vsearch.compact import delta_backlog as backlog

    return backlog(store)


def fold_delta(store: ObjectStore, snapshot_id: str) -> dict[str, Any]:
    from vsearch.compact import fold_delta as fold

    return fold(store, snapshot_id)


def __getattr__(name: str) -> Any:
    # The DAGs catch RecallGateFailed without importing the index stage at parse time.
    if name == "RecallGateFailed":
        from vsearch.index import RecallGateFailed

        return RecallGateFailed
    raise AttributeError(name)
