"""``vsearch train``, ``build-shard``, ``validate``, ``publish-built`` and ``build``:
the index stage outside Airflow (the same functions the DAG's tasks call).

A failed recall gate exits 5 (refused) after printing the measured curve.
"""

from __future__ import annotations

import json
from typing import Any

import click

from vsearch.cli import Context

pass_context = click.make_pass_decorator(Context)


def _spec_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--factory", help="Explicit faiss factory string, e.g. OPQ32,IVF4096,PQ32x8."
            ),
            click.option("--budget", type=float, help="Resident bytes per vector (default 48)."),
            click.option(
                "--max-query-ms", type=float, help="Per-query ms on one core (default 1)."
            ),
            click.option("--nshards", type=int, help="Number of shards (default 1)."),
            click.option("--seed", type=int, help="Seed of sampling and k-means (default 0)."),
            click.option("--metric", type=click.Choice(["ip", "l2"]), help="Default: detected."),
            click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), help="k-means on."),
        ]
    ):
        f = option(f)
    return f


def _train_kwargs(ctx: Context, opts: dict[str, Any]) -> dict[str, Any]:
    s = ctx.settings
    return {
        "factory": opts["factory"] or s.index_factory or None,
        "bytes_per_vector_budget": opts["budget"] or s.index_bytes_per_vector,
        "max_query_ms": opts["max_query_ms"] or s.index_max_query_ms,
        "nshards": opts["nshards"] or s.index_nshards,
        "seed": s.index_seed if opts["seed"] is None else opts["seed"],
        "metric": opts["metric"],
        "device": opts["device"] or s.index_device,
    }


@click.command()
@click.argument("snapshot_id")
@_spec_options
@pass_context
def train(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Choose the index for SNAPSHOT_ID's embeddings and train it (trained.index)."""
    from vsearch.index import train_index
    from vsearch.index.train import read_trained_record

    key = train_index(ctx.store, snapshot_id, **_train_kwargs(ctx, opts))
    record = read_trained_record(ctx.store, snapshot_id)
    click.echo(f"{key}: {record['spec']['factory']} ({record['n_train']} training vectors)")
    for reason in record["spec"]["reasons"]:
        click.echo(f"  - {reason}")


@click.command("build-shard")
@click.argument("snapshot_id")
@click.option("--shard", type=int, required=True, help="This shard, 0..nshards-1.")
@click.option("--nshards", type=int, required=True, help="Number of shards.")
@pass_context
def build_shard(ctx: Context, snapshot_id: str, shard: int, nshards: int) -> None:
    """Add the shard's vectors to a copy of the trained index; print its ShardInfo."""
    from vsearch.index import build_shard as build

    click.echo(json.dumps(build(ctx.store, snapshot_id, shard, nshards)))


def _validate_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--target-recall", type=float, help="Gate on recall@10 (default 0.95)."),
            click.option("--nq", type=int, help="Held-out image queries (default 1000)."),
            click.option("--text-queries", help="Key of caption vectors (.npy) in the store."),
            click.option("--require-text", is_flag=True, help="Fail without text queries."),
        ]
    ):
        f = option(f)
    return f


@click.command()
@click.argument("snapshot_id")
@_validate_options
@click.option("--nshards", type=int, help="Default: what the shard records say.")
@click.option("--revalidate", is_flag=True, help="Measure again even if nothing changed.")
@pass_context
def validate(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Measure recall against exact search, write report.json, apply the gate."""
    from vsearch.index import validate_snapshot

    _run_validation(
        ctx,
        snapshot_id,
        lambda: validate_snapshot(
            ctx.store,
            snapshot_id,
            target_recall=opts["target_recall"] or ctx.settings.index_target_recall,
            nq=opts["nq"],
            text_queries=opts["text_queries"],
            require_text=opts["require_text"],
            nshards=opts["nshards"],
            revalidate=opts["revalidate"],
            max_query_ms=ctx.settings.index_max_query_ms,
        ),
    )


def _run_validation(ctx: Context, snapshot_id: str, run: Any) -> None:
    from vsearch.index import RecallGateFailed
    from vsearch.index.publish import read_report

    try:
        run()
    except RecallGateFailed:
        _print_report(read_report(ctx.store, snapshot_id))
        raise
    _print_report(read_report(ctx.store, snapshot_id))


def _print_report(report: dict[str, Any]) -> None:
    sizes = report["sizes"]
    click.echo(f"{report['snapshot_id']}: {report['spec']['factory']}, {report['ntotal']} vectors")
    click.echo(
        f"  bytes/vector: {sizes['resident_bytes_per_vector']} resident, "
        f"{sizes['refine_bytes_per_vector']} re-ranking (may stay on disk)"
    )
    click.echo("  nprobe  " + "  ".join(f"{k[:5]}@10    ms" for k in report["sweep"]))
    rows = zip(*report["sweep"].values(), strict=True)
    for row in rows:
        cells = "  ".join(f"{r10:8.4f} {ms:6.3f}" for _, _, r10, ms in row)
        click.echo(f"  {row[0][0]:6d}  {cells}")
    for kind, r in report["recall"].items():
        if r is not None:
            click.echo(f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in r.items()))
    gate = report["gate"]
    click.echo(
        f"  default nprobe {report['default_nprobe']}; gate "
        f"{'passed' if gate['passed'] else 'FAILED'}: {gate['reason']}"
    )


def _encoder_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--encoder-name", help="Default: embeddings/{id}/encoder.json or records."
            ),
            click.option("--model-id", help="The encoder's model id."),
            click.option("--revision", help="The encoder's weights revision."),
            click.option("--previous", help="previous_snapshot_id (default: newest older one)."),
            click.option("--force", is_flag=True, help="Move CURRENT even to an older id."),
        ]
    ):
        f = option(f)
    return f


def _publish_args(ctx: Context, snapshot_id: str, opts: dict[str, Any]) -> dict[str, Any]:
    from vsearch.index import lineage_from_partitions, previous_snapshot_for
    from vsearch.snapshots import SnapshotNotFound, read_manifest

    try:  # a retry must assemble the manifest it already published
        previous = read_manifest(ctx.store, snapshot_id).previous_snapshot_id
    except SnapshotNotFound:
        previous = previous_snapshot_for(ctx.store, snapshot_id)
    return {
        "encoder": _encoder_info(ctx, snapshot_id, opts),
        "lineage": lineage_from_partitions(
            ctx.store, snapshot_id, sources=(f"embeddings/{snapshot_id}/",)
        ),
        "previous_snapshot_id": opts["previous"] or previous,
        "force": opts["force"],
    }


def _encoder_info(ctx: Context, snapshot_id: str, opts: dict[str, Any]) -> Any:
    """The EncoderInfo: embeddings/{id}/encoder.json when the embedding stage wrote one,
    else the partitions' encoder id (``name@revision#digest``), options overriding."""
    import dataclasses

    from vsearch.index.layout import get_json
    from vsearch.index.vectors import inventory
    from vsearch.manifest import EncoderInfo

    inv = inventory(ctx.store, snapshot_id)
    stored = get_json(ctx.store, f"embeddings/{snapshot_id}/encoder.json")
    if stored is not None:
        info = EncoderInfo(**stored)
    else:
        from vsearch.index.train import detect_metric

        name, _, rest = inv.records[0].encoder_id.partition("@")
        info = EncoderInfo(
            name,
            name,
            rest.split("#")[0] or "unknown",
            inv.d,
            detect_metric(ctx.store, inv) == "ip",
        )
    overrides = {
        "name": opts["encoder_name"],
        "model_id": opts["model_id"],
        "revision": opts["revision"],
    }
    return dataclasses.replace(info, **{k: v for k, v in overrides.items() if v})


@click.command("publish-built")
@click.argument("snapshot_id")
@_encoder_options
@pass_context
def publish_built(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Assemble SNAPSHOT_ID's manifest from its report and shards and publish it."""
    from vsearch.index import publish_built_snapshot

    result = publish_built_snapshot(ctx.store, snapshot_id, **_publish_args(ctx, snapshot_id, opts))
    click.echo(result.message)


@click.command()
@click.argument("snapshot_id")
@_spec_options
@_validate_options
@_encoder_options
@pass_context
def build(ctx: Context, /, snapshot_id: str, **opts: Any) -> None:
    """Train, build every shard, validate and publish SNAPSHOT_ID, in sequence.

    Each step is skipped when its output already exists for the same inputs, so
    re-running after a failure resumes where it stopped.
    """
    from tqdm import tqdm

    from vsearch.index import (
        build_shard as build_one,
    )
    from vsearch.index import (
        publish_built_snapshot,
        train_index,
        validate_snapshot,
    )

    kwargs = _train_kwargs(ctx, opts)
    click.echo(train_index(ctx.store, snapshot_id, **kwargs))
    nshards = kwargs["nshards"]
    for j in tqdm(range(nshards), desc="shards", unit="shard"):
        build_one(ctx.store, snapshot_id, j, nshards)
    _run_validation(
        ctx,
        snapshot_id,
        lambda: validate_snapshot(
            ctx.store,
            snapshot_id,
            target_recall=opts["target_recall"] or ctx.settings.index_target_recall,
            nq=opts["nq"],
            text_queries=opts["text_queries"],
            require_text=opts["require_text"],
            nshards=nshards,
            max_query_ms=kwargs["max_query_ms"],
        ),
    )
    result = publish_built_snapshot(ctx.store, snapshot_id, **_publish_args(ctx, snapshot_id, opts))
    click.echo(result.message)


COMMANDS = [train, build_shard, validate, publish_built, build]
