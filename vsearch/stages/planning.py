"""The first stages of a build: ``plan`` the run's partitions, ``fetch`` URL-list shards.

A task (one element of ``plan``'s result, the argument of ``fetch`` and ``embed``)
is a small JSON-able dict, a ``Task`` (``vsearch.stages.contracts``): ``{"partition": i,
"source": uri, "spec": the source's own partition spec, "options": how to open the
source}``. Partitions are numbered 0, 1, 2... across all the run's sources.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from vsearch.config import Settings
from vsearch.index.layout import run_record_key
from vsearch.stages.contracts import Fetched, Task
from vsearch.stages.run_records import RunInfo, RunRecord, StageError, write_run_record
from vsearch.storage import ObjectStore

log = logging.getLogger(__name__)


def source_options(
    uri: str, settings: Settings, partition_size: int | None = None
) -> dict[str, Any]:
    """How to open ``uri``: partition size, and for URL lists the fetch settings."""
    from vsearch.sources import is_url_list

    if is_url_list(uri):
        return {
            "shard_size": partition_size or settings.fetch_shard_size,
            "concurrency": settings.fetch_concurrency,
            "read_timeout_s": settings.fetch_timeout_s,
            "retries": settings.fetch_retries,
            "max_bytes": settings.fetch_max_mb << 20,
            "max_side": settings.fetch_max_side or None,
        }
    return {"partition_size": partition_size or settings.partition_size}


def partition_tasks(
    store: ObjectStore,
    sources: list[str],
    settings: Settings,
    *,
    partition_size: int | None = None,
) -> list[Task]:
    """The tasks over all ``sources``, numbered across them (what ``plan`` returns)."""
    from vsearch.sources import open_source

    tasks: list[Task] = []
    for uri in sources:
        options = source_options(uri, settings, partition_size)
        source = open_source(uri, store=store, settings=settings, **options)
        for spec in source.partitions():
            tasks.append(Task(partition=len(tasks), source=uri, spec=spec, options=options))
    return tasks


def plan(
    store: ObjectStore,
    snapshot_id: str,
    sources: list[str],
    *,
    partition_size: int | None = None,
    encoder: str | None = None,
    run: dict[str, str] | None = None,
    settings: Settings | None = None,
) -> list[Task]:
    """The run's partitions over all ``sources``; writes the run record (``build.json``).

    ``encoder`` (default: the ``encoder`` setting) embeds every partition; sources
    of precomputed vectors need none. ``run`` ({dag_id, run_id}) goes into the
    manifest's lineage; a rerun keeps the first run's.
    """
    from vsearch.index.assemble import previous_snapshot_for
    from vsearch.manifest import check_snapshot_id
    from vsearch.sources.precomputed import KIND as VECTORS

    settings = settings or Settings.load()
    check_snapshot_id(snapshot_id)
    if not sources:
        raise StageError("no sources: pass params.sources (or set VSEARCH_SOURCES)")
    tasks = partition_tasks(store, sources, settings, partition_size=partition_size)
    kinds = {t["spec"].get("kind") == VECTORS for t in tasks}
    if len(kinds) > 1:
        raise StageError("a run embeds images or takes precomputed vectors, not both")
    precomputed = kinds == {True}
    write_run_record(
        store,
        snapshot_id,
        RunRecord(
            kind="build",
            sources=tuple(sources),
            encoder_spec=None if precomputed else (encoder or settings.encoder),
            previous_snapshot_id=previous_snapshot_for(store, snapshot_id),
            run=RunInfo(**(run or {})),
            partitions=len(tasks),
        ),
    )
    log.info("%s: %d partitions from %d sources (%s)", snapshot_id, len(tasks), len(sources),
             run_record_key(snapshot_id))  # fmt: skip
    return tasks


def fetch(
    store: ObjectStore,
    task: Task,
    *,
    settings: Settings | None = None,
    progress: Callable[[int], object] | None = None,
) -> Task:
    """Download a URL-list shard into ``images/{dataset}/{shard:05d}.tar`` once (a shard
    already fetched is not downloaded again); other sources pass through unchanged.

    Returns the task, with ``"fetched": {key, ok, failed, reasons}`` for a URL list, so
    that ``embed`` can be mapped over ``fetch``'s results. The images do not depend on
    the snapshot: every run that lists the same URLs shares them.
    """
    from vsearch.sources import open_source
    from vsearch.sources.urls import UrlListSource, shard_keys

    if task["spec"].get("kind") != "urls":
        return task
    source = open_source(task["source"], store=store, settings=settings, **task["options"])
    assert isinstance(source, UrlListSource)  # a "urls" spec comes from one
    stats = source.fetch(task["spec"], progress=progress)
    key = shard_keys(source.dataset, task["spec"]["index"])[0]
    fetched = Fetched(key=key, ok=stats["ok"], failed=stats["failed"], reasons=stats["reasons"])
    log.info("fetched %s: %d ok, %d failed", key, stats["ok"], stats["failed"])
    return {**task, "fetched": fetched}
