"""``vsearch index SOURCE...``: every stage in one command, on this machine.

plan -> fetch (URL lists) -> embed (or import precomputed vectors) -> train -> every
shard -> the recall gate -> publish: the stage functions the Airflow DAG runs as
tasks, one after the other, with a progress bar (items/s) per partition. Options left
out take their ``VSEARCH_*`` defaults. Run it again after a failure and it resumes:
every finished stage is skipped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import click

from vsearch.cli import Context
from vsearch.cli.build_commands import (
    gated,
    print_report,
    print_trained,
    spec_options,
    train_options,
    validate_options,
    validation_options,
)
from vsearch.cli.embed_commands import failure_reasons, task_size

pass_context = click.make_pass_decorator(Context)


@click.command("index")
@click.argument("sources", nargs=-1, required=True)
@click.option("--snapshot", "snapshot_id", help="Snapshot id (default: now, UTC).")
@click.option("--encoder", "encoder_spec", help="Encoder spec (default: VSEARCH_ENCODER).")
@click.option("--partition-size", type=int, help="Items per partition (VSEARCH_PARTITION_SIZE).")
@spec_options
@validate_options
@click.option("--force", is_flag=True, help="Move CURRENT even to an older id.")
@pass_context
def index(ctx: Context, /, sources: tuple[str, ...], **opts: Any) -> None:
    """Index SOURCES and publish the snapshot: a folder of images, tar shards (a glob),
    store:PREFIX, s3://bucket/prefix, a URL list (.csv/.jsonl/.parquet), or precomputed
    embeddings (a .npy file or a folder of them; see docs/stages.md)."""
    from tqdm import tqdm

    from vsearch import stages
    from vsearch.manifest import snapshot_id_for

    store, settings = ctx.store, ctx.settings
    sid = opts["snapshot_id"] or snapshot_id_for(datetime.now(UTC).replace(microsecond=0))
    tasks = stages.plan(store, sid, list(sources), partition_size=opts["partition_size"],
                        encoder=opts["encoder_spec"], settings=settings)  # fmt: skip
    record = stages.read_run_record(store, sid)
    encoder = record.encoder_spec or "none (precomputed vectors)"
    click.echo(f"snapshot {sid}: {len(tasks)} partition(s) from {len(sources)} source(s), "
               f"encoder {encoder}")  # fmt: skip
    items = failed = 0
    for task in tasks:
        name = f"partition {task['partition']:05d}"
        if task["spec"].get("kind") == "urls":
            with tqdm(total=task_size(task), desc=f"fetch {name}", unit="url") as bar:
                task = stages.fetch(store, task, settings=settings, progress=bar.update)
        with tqdm(total=task_size(task), desc=f"embed {name}", unit="item") as bar:
            done = stages.embed(store, sid, task, settings=settings, progress=bar.update)
        items, failed = items + done["count"], failed + done["failures"]
        if done["failures"]:
            click.echo(f"  {name}: {done['failures']} failed"
                       f"{failure_reasons(store, sid, done['partition'])}")  # fmt: skip
    click.echo(f"embedded: {items} items, {failed} failed")
    started = time.monotonic()

    def on_stage(stage: str, result: Any) -> None:
        nonlocal started
        elapsed = time.monotonic() - started
        if stage == "train":
            print_trained(store, sid, result)
            click.echo(f"  trained in {elapsed:.1f}s")
        elif stage == "build_shard":
            click.echo(f"{result['uri']}: {result['ntotal']} vectors in {elapsed:.1f}s")
        elif stage == "validate":
            print_report(store, sid)
            click.echo(f"  validated in {elapsed:.1f}s")
        elif stage == "publish":
            click.echo(result["message"])
        started = time.monotonic()

    click.echo("training the index (the spec and why follow) ...")
    gated(store, sid, lambda: stages.build_index(
        store, sid, train_options=train_options(opts), validate_options=validation_options(opts),
        force=opts["force"], settings=settings, on_stage=on_stage,
    ), after=False)  # fmt: skip


COMMANDS = [index]
