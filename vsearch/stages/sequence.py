"""Stages in sequence, for one machine: what ``vsearch build`` and ``vsearch index`` run.

Airflow runs the same stage functions as separate tasks (partitions and shards
as mapped tasks); here they run one after the other in this process. Every stage
skips work already committed for the same input, so running a sequence again
after a failure resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from vsearch.config import Settings
from vsearch.stages.contracts import PublishOutcome, Task, TrainOptions, ValidateOptions
from vsearch.stages.embed_stage import embed
from vsearch.stages.index_stages import build_shard, publish, train, trained_nshards, validate
from vsearch.stages.planning import fetch, plan
from vsearch.storage import ObjectStore

# (stage name, its result): the CLI prints them, tests collect them. The stages, in
# order: "plan" (the tasks), "fetch" (a fetched URL-list task), "embed", "train",
# "build_shard", "validate", "publish".
OnStage = Callable[[str, Any], None]
# A progress callback taking a number of items, or None for the stage's own log lines.
Progress = Callable[[int], object] | None
# (stage name: "fetch" or "embed", its task) -> a context that yields the stage's
# progress callback while it runs (the CLI's progress bars).
ProgressFactory = Callable[[str, Task], AbstractContextManager[Progress]]


def _quiet(stage: str, result: Any) -> None:
    pass


def _no_progress(stage: str, task: Task) -> AbstractContextManager[Progress]:
    return nullcontext()


def build_index(
    store: ObjectStore,
    snapshot_id: str,
    *,
    train_options: TrainOptions | None = None,
    validate_options: ValidateOptions | None = None,
    force: bool = False,
    settings: Settings | None = None,
    on_stage: OnStage = _quiet,
) -> PublishOutcome:
    """train -> build every shard -> validate (raises RecallGateFailed) -> publish."""
    settings = settings or Settings.load()
    on_stage("train", train(store, snapshot_id, settings=settings, **(train_options or {})))
    return complete_snapshot(store, snapshot_id, validate_options=validate_options, force=force,
                             settings=settings, on_stage=on_stage)  # fmt: skip


def complete_snapshot(
    store: ObjectStore,
    snapshot_id: str,
    *,
    validate_options: ValidateOptions | None = None,
    force: bool = False,
    settings: Settings | None = None,
    on_stage: OnStage = _quiet,
) -> PublishOutcome:
    """From a trained index (a build's, or compaction's copy): every shard -> validate ->
    publish."""
    settings = settings or Settings.load()
    nshards = trained_nshards(store, snapshot_id, settings)
    for j in range(nshards):
        on_stage("build_shard", build_shard(store, snapshot_id, j, nshards, settings=settings))
    report = validate(store, snapshot_id, nshards=nshards, settings=settings,
                      **(validate_options or {}))  # fmt: skip
    on_stage("validate", report)
    result = publish(store, snapshot_id, force=force)
    on_stage("publish", result)
    return result


def index_sources(
    store: ObjectStore,
    snapshot_id: str,
    sources: list[str],
    *,
    partition_size: int | None = None,
    encoder: str | None = None,
    train_options: TrainOptions | None = None,
    validate_options: ValidateOptions | None = None,
    force: bool = False,
    settings: Settings | None = None,
    on_stage: OnStage = _quiet,
    progress: ProgressFactory = _no_progress,
) -> PublishOutcome:
    """Every stage: plan -> fetch (URL lists) -> embed each partition -> ``build_index``.

    ``progress(stage, task)`` gives the fetch and embed stages their progress callback.
    """
    settings = settings or Settings.load()
    tasks = plan(store, snapshot_id, sources, partition_size=partition_size, encoder=encoder,
                 settings=settings)  # fmt: skip
    on_stage("plan", tasks)
    for task in tasks:
        if task["spec"].get("kind") == "urls":
            with progress("fetch", task) as bar:
                task = fetch(store, task, settings=settings, progress=bar)
            on_stage("fetch", task)
        with progress("embed", task) as bar:
            done = embed(store, snapshot_id, task, settings=settings, progress=bar)
        on_stage("embed", done)
    return build_index(store, snapshot_id, train_options=train_options,
                       validate_options=validate_options, force=force, settings=settings,
                       on_stage=on_stage)  # fmt: skip
