"""``vsearch train``, ``build-shard``, ``validate``, ``publish-built``, ``build``, ``compact``:
the index stages outside Airflow, through the same stage functions the DAG's tasks call.

Options left out take their ``Settings`` default (``VSEARCH_INDEX_*``). A failed
recall gate exits 5 (refused) after printing the measured curve.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from vsearch.cli import Context
from vsearch.storage import ObjectStore

if TYPE_CHECKING:
    from vsearch.stages.contracts import TrainOptions, ValidateOptions

pass_context = click.make_pass_decorator(Context)


def _options(*options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


spec_options = _options(
    click.option("--factory", help="Explicit faiss factory string, e.g. OPQ32,IVF4096,PQ32x8."),
    click.option(
        "--budget", type=float, help="Resident bytes per vector (VSEARCH_INDEX_BYTES_PER_VECTOR)."
    ),
    click.option("--max-query-ms", type=float, help="Per-query ms on one core."),
    click.option(
        "--memory-floor-mb",
        type=float,
        help="Resident MiB under which memory never forces compression.",
    ),
    click.option("--nshards", type=int, help="Number of shards."),
    click.option("--seed", type=int, help="Seed of sampling and k-means."),
    click.option("--metric", type=click.Choice(["ip", "l2"]), help="Default: detected."),
    click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), help="k-means on."),
)
validate_options = _options(
    click.option(
        "--target-recall", type=float, help="Gate on recall@10 (VSEARCH_INDEX_TARGET_RECALL)."
    ),
    click.option("--nq", type=int, help="Held-out image queries (default: all held out)."),
    click.option("--text-queries", help="Key of caption vectors (.npy) in the store."),
    click.option("--require-text", is_flag=True, help="Fail without text queries."),
)


def train_options(opts: dict[str, Any]) -> TrainOptions:
    """The ``spec_options`` given, as overrides of the index settings."""
    return {
        "factory": opts["factory"],
        "bytes_per_vector": opts["budget"],
        "max_query_ms": opts["max_query_ms"],
        "memory_floor_mb": opts["memory_floor_mb"],
        "nshards": opts["nshards"],
        "seed": opts["seed"],
        "metric": opts["metric"],
        "device": opts["device"],
    }


def validation_options(opts: dict[str, Any]) -> ValidateOptions:
    return {
        "target_recall": opts["target_recall"],
        "nq": opts["nq"],
        "text_queries": opts["text_queries"],
        "require_text": opts["require_text"],
    }


def print_trained(store: ObjectStore, snapshot_id: str, key: str) -> None:
    from vsearch.index.trained_record import read_trained_record

    record = read_trained_record(store, snapshot_id)
    click.echo(f"{key}: {record.spec.factory} ({record.n_train} training vectors)")
    for reason in record.spec.reasons:
        click.echo(f"  - {reason}")


def print_report(store: ObjectStore, snapshot_id: str) -> None:
    from vsearch.index.report import format_report, read_report

    for line in format_report(read_report(store, snapshot_id)):
        click.echo(line)


def gated(
    store: ObjectStore, snapshot_id: str, run: Callable[[], Any], *, after: bool = True
) -> Any:
    """Run what validates; print the report when the gate failed, and (``after``) when
    it passed."""
    from vsearch.index import RecallGateFailed

    try:
        result = run()
    except RecallGateFailed:
        print_report(store, snapshot_id)
        raise
    if after:
        print_report(store, snapshot_id)
    return result


@click.command()
@click.argument("snapshot_id")
@spec_options
@pass_context
def train(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Choose the index for SNAPSHOT_ID's embeddings and train it (trained.index)."""
    from vsearch import stages

    key = stages.train(ctx.store, snapshot_id, settings=ctx.settings, **train_options(opts))
    print_trained(ctx.store, snapshot_id, key)


@click.command("build-shard")
@click.argument("snapshot_id")
@click.option("--shard", type=int, required=True, help="This shard, 0..nshards-1.")
@click.option("--nshards", type=int, help="Number of shards (default: what it was trained for).")
@pass_context
def build_shard(ctx: Context, snapshot_id: str, shard: int, nshards: int | None) -> None:
    """Add the shard's vectors to a copy of the trained index; print its ShardInfo."""
    from vsearch import stages

    info = stages.build_shard(ctx.store, snapshot_id, shard, nshards, settings=ctx.settings)
    click.echo(json.dumps(info))


@click.command()
@click.argument("snapshot_id")
@validate_options
@click.option("--nshards", type=int, help="Default: what the shard records say.")
@click.option("--revalidate", is_flag=True, help="Measure again even if nothing changed.")
@pass_context
def validate(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Measure recall against exact search, write report.json, apply the gate."""
    from vsearch import stages

    gated(ctx.store, snapshot_id, lambda: stages.validate(
        ctx.store, snapshot_id, nshards=opts["nshards"], revalidate=opts["revalidate"],
        settings=ctx.settings, **validation_options(opts),
    ))  # fmt: skip


@click.command("publish-built")
@click.argument("snapshot_id")
@click.option("--force", is_flag=True, help="Move CURRENT even to an older id.")
@pass_context
def publish_built(ctx: Context, /, snapshot_id: str, force: bool) -> None:
    """Assemble SNAPSHOT_ID's manifest from its run record, report and shards; publish it."""
    from vsearch import stages

    click.echo(stages.publish(ctx.store, snapshot_id, force=force)["message"])


@click.command()
@click.argument("snapshot_id")
@spec_options
@validate_options
@click.option("--force", is_flag=True, help="Move CURRENT even to an older id.")
@pass_context
def build(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Train, build every shard, validate and publish SNAPSHOT_ID, in sequence.

    Each step is skipped when its output already exists for the same inputs, so
    re-running after a failure resumes where it stopped.
    """
    from vsearch import stages

    gated(ctx.store, snapshot_id, lambda: stages.build_index(
        ctx.store, snapshot_id, train_options=train_options(opts),
        validate_options=validation_options(opts), force=opts["force"], settings=ctx.settings,
        on_stage=lambda stage, result: _say(ctx.store, snapshot_id, stage, result),
    ), after=False)  # fmt: skip


def _say(store: ObjectStore, snapshot_id: str, stage: str, result: Any) -> None:
    if stage == "train":
        print_trained(store, snapshot_id, result)
    elif stage == "build_shard":
        click.echo(f"{result['uri']}: {result['ntotal']} vectors, {result['bytes']} bytes")
    elif stage == "validate":
        print_report(store, snapshot_id)
    elif stage == "publish":
        click.echo(result["message"])


@click.command()
@click.argument("snapshot_id")
@pass_context
def compact(ctx: Context, snapshot_id: str) -> None:
    """Fold the live delta into SNAPSHOT_ID (newer than CURRENT), then shards, gate, publish."""
    from vsearch import stages

    summary = stages.compact(ctx.store, snapshot_id, settings=ctx.settings)
    click.echo(f"folded {summary['entries']} delta entries into {snapshot_id} "
               f"(up to {summary['delta_watermark']}): {summary['upserts']} upserts, "
               f"{summary['deletes']} deletes")  # fmt: skip
    gated(ctx.store, snapshot_id, lambda: stages.complete_snapshot(
        ctx.store, snapshot_id, settings=ctx.settings,
        on_stage=lambda stage, result: _say(ctx.store, snapshot_id, stage, result),
    ), after=False)  # fmt: skip


COMMANDS = [train, build_shard, validate, publish_built, build, compact]
