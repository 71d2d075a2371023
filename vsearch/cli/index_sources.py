"""``vsearch index SOURCE...``: every stage in one command, on this machine.

plan -> fetch (URL lists) -> embed (or import precomputed vectors) -> train -> every
shard -> the recall gate -> publish: ``vsearch.stages.index_sources``, the sequence the
tests run, of the stage functions the Airflow DAG runs as tasks; with a progress bar
(items/s) per partition and a line as each stage finishes. Options left
out take their ``VSEARCH_*`` defaults. Run it again after a failure and it resumes:
every finished stage is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
from vsearch.storage import ObjectStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from vsearch.stages.contracts import Task

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
    from vsearch import stages
    from vsearch.manifest import snapshot_id_for

    store, settings = ctx.store, ctx.settings
    sid = opts["snapshot_id"] or snapshot_id_for(datetime.now(UTC).replace(microsecond=0))
    gated(store, sid, lambda: stages.index_sources(
        store, sid, list(sources), partition_size=opts["partition_size"],
        encoder=opts["encoder_spec"], train_options=train_options(opts),
        validate_options=validation_options(opts), force=opts["force"], settings=settings,
        on_stage=_Printer(store, sid, len(sources)), progress=_bars,
    ), after=False)  # fmt: skip


@contextmanager
def _bars(stage: str, task: Task) -> Iterator[Callable[[int], object]]:
    """A progress bar (items/s) for one partition's fetch or embed."""
    from tqdm import tqdm

    name = f"partition {task['partition']:05d}"
    unit = "url" if stage == "fetch" else "item"
    with tqdm(total=task_size(task), desc=f"{stage} {name}", unit=unit) as bar:
        yield bar.update


class _Printer:
    """What ``vsearch index`` prints as the stages finish, with each stage's time."""

    def __init__(self, store: ObjectStore, snapshot_id: str, nsources: int) -> None:
        self.store, self.snapshot_id, self.nsources = store, snapshot_id, nsources
        self.partitions = self.embedded = self.items = self.failed = 0
        self.started = time.monotonic()

    def __call__(self, stage: str, result: Any) -> None:
        from vsearch.stages import read_run_record

        store, sid = self.store, self.snapshot_id
        elapsed = time.monotonic() - self.started
        if stage == "plan":
            self.partitions = len(result)
            record = read_run_record(store, sid)
            encoder = record.encoder_spec or "none (precomputed vectors)"
            click.echo(f"snapshot {sid}: {len(result)} partition(s) from {self.nsources} "
                       f"source(s), encoder {encoder}")  # fmt: skip
        elif stage == "embed":
            self.embedded += 1
            self.items, self.failed = self.items + result["count"], self.failed + result["failures"]
            if result["failures"]:
                click.echo(f"  partition {result['partition']:05d}: {result['failures']} failed"
                           f"{failure_reasons(store, sid, result['partition'])}")  # fmt: skip
        elif stage == "train":
            print_trained(store, sid, result)
            click.echo(f"  trained in {elapsed:.1f}s")
        elif stage == "build_shard":
            click.echo(f"{result['uri']}: {result['ntotal']} vectors in {elapsed:.1f}s")
        elif stage == "validate":
            print_report(store, sid)
            click.echo(f"  validated in {elapsed:.1f}s")
        elif stage == "publish":
            click.echo(result["message"])
        if stage in ("plan", "embed") and self.embedded == self.partitions:
            click.echo(f"embedded: {self.items} items, {self.failed} failed")
            click.echo("training the index (the spec and why follow) ...")
        self.started = time.monotonic()


COMMANDS = [index]
