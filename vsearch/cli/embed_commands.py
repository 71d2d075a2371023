"""``vsearch fetch`` and ``vsearch embed``: the embedding stage outside Airflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vsearch.cli import Context
from vsearch.storage import ObjectStore

if TYPE_CHECKING:
    from vsearch.stages.contracts import Task

pass_context = click.make_pass_decorator(Context)


def _pick(tasks: list[Task], wanted: tuple[int, ...]) -> list[Task]:
    if not wanted:
        return tasks
    missing = sorted(set(wanted) - {t["partition"] for t in tasks})
    if missing:
        raise click.BadParameter(
            f"no partition {missing} (the run has {len(tasks)})", param_hint="--partition"
        )
    return [t for t in tasks if t["partition"] in wanted]


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{r}: {n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def task_size(task: Task) -> int | None:
    spec = task["spec"]
    return spec["stop"] - spec["start"] if "stop" in spec else None


@click.command()
@click.argument("url_list")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these shards.")
@pass_context
def fetch(ctx: Context, url_list: str, partitions: tuple[int, ...]) -> None:
    """Download a URL list (CSV, JSONL, Parquet) into webdataset shards in the store.

    Writes images/{dataset}/{shard:05d}.tar and .stats.json per shard, once: a
    shard already fetched is skipped. {dataset} is the list's file name, which
    `vsearch embed URL_LIST` reads back. Tuning: VSEARCH_FETCH_* settings.
    """
    from tqdm import tqdm

    from vsearch import stages
    from vsearch.sources import SourceError, is_url_list

    if not is_url_list(url_list):
        raise SourceError(f"{url_list}: fetch takes a URL list (.csv, .tsv, .jsonl, .parquet)")
    for task in _pick(stages.partition_tasks(ctx.store, [url_list], ctx.settings), partitions):
        with tqdm(total=task_size(task), desc=f"shard {task['partition']:05d}", unit="url") as bar:
            fetched = stages.fetch(ctx.store, task, settings=ctx.settings, progress=bar.update)
        f = fetched["fetched"]
        click.echo(f"{f['key']}: {f['ok']} ok, {f['failed']} failed ({_reasons(f['reasons'])})")


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--snapshot", "snapshot_id", required=True, help="Snapshot id, YYYYMMDDTHHMMSSZ.")
@click.option("--encoder", "encoder_spec", help="Encoder spec (default: VSEARCH_ENCODER).")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these partitions.")
@click.option("--batch-size", type=int, help="Images per model call.")
@click.option("--workers", type=int, help="Decode threads (default: one per core).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), help="Stored precision.")
@pass_context
def embed(
    ctx: Context,
    sources: tuple[str, ...],
    snapshot_id: str,
    encoder_spec: str | None,
    partitions: tuple[int, ...],
    batch_size: int | None,
    workers: int | None,
    dtype: str | None,
) -> None:
    """Plan SNAPSHOT's run over SOURCES and embed them into embeddings/{snapshot}/part-*.

    A SOURCE is a directory, tar shard(s) (a glob), store:PREFIX, s3://bucket/prefix,
    a URL list, or precomputed vectors (.npy). Finished partitions are skipped; bad
    images are recorded in each partition's failures file.
    """
    from tqdm import tqdm

    from vsearch import stages

    tasks = stages.plan(ctx.store, snapshot_id, list(sources), encoder=encoder_spec,
                        settings=ctx.settings)  # fmt: skip
    total_ok = total_failed = 0
    chosen = _pick(tasks, partitions)
    for task in chosen:
        task = stages.fetch(ctx.store, task, settings=ctx.settings)
        with tqdm(total=task_size(task), desc=f"partition {task['partition']:05d}",
                  unit="img") as bar:  # fmt: skip
            done = stages.embed(ctx.store, snapshot_id, task, batch_size=batch_size,
                                workers=workers, dtype=dtype, settings=ctx.settings,
                                progress=bar.update)  # fmt: skip
            already_done = bar.n == 0 and done["count"] + done["failures"] > 0
        total_ok, total_failed = total_ok + done["count"], total_failed + done["failures"]
        click.echo(
            f"part-{done['partition']:05d}: {done['count']} embedded, {done['failures']} failed"
            + failure_reasons(ctx.store, snapshot_id, done["partition"])
            + (" (already done)" if already_done else "")
        )
    click.echo(f"{len(chosen)} partition(s): {total_ok} embedded, {total_failed} failed")


def failure_reasons(store: ObjectStore, snapshot_id: str, index: int) -> str:
    """`` (reason: count, ...)`` of a committed partition's failures, or ``""``."""
    from vsearch.embedding.partitions import read_record

    record = read_record(store, snapshot_id, index)
    reasons = _reasons(record.stats.get("failed_by_reason", {})) if record else ""
    return f" ({reasons})" if reasons else ""


COMMANDS = [fetch, embed]
