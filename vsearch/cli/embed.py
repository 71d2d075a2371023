"""``vsearch fetch`` and ``vsearch embed``: the embedding stage outside Airflow."""

from __future__ import annotations

from typing import Any

import click

from vsearch.cli import Context

pass_context = click.make_pass_decorator(Context)


def _pick(specs: list[dict[str, Any]], wanted: tuple[int, ...]) -> list[dict[str, Any]]:
    if not wanted:
        return specs
    by_index = {s["index"]: s for s in specs}
    missing = sorted(set(wanted) - set(by_index))
    if missing:
        raise click.BadParameter(
            f"no partition {missing} (the source has {len(specs)})", param_hint="--partition"
        )
    return [by_index[i] for i in sorted(set(wanted))]


def _url_options(ctx: Context, dataset: str | None) -> dict[str, Any]:
    s = ctx.settings
    options: dict[str, Any] = {
        "shard_size": s.fetch_shard_size,
        "concurrency": s.fetch_concurrency,
        "read_timeout_s": s.fetch_timeout_s,
        "retries": s.fetch_retries,
        "max_bytes": s.fetch_max_mb << 20,
        "max_side": s.fetch_max_side or None,
    }
    if dataset:
        options["dataset"] = dataset
    return options


def _source_options(ctx: Context, uri: str, dataset: str | None) -> dict[str, Any]:
    from vsearch.sources.urls import LIST_SUFFIXES

    if uri.split("?", 1)[0].lower().endswith(LIST_SUFFIXES):
        return _url_options(ctx, dataset)
    return {"partition_size": ctx.settings.partition_size}


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{r}: {n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


@click.command()
@click.argument("url_list")
@click.option("--dataset", help="Name under images/ (default: the list's file name).")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these shards.")
@pass_context
def fetch(ctx: Context, url_list: str, dataset: str | None, partitions: tuple[int, ...]) -> None:
    """Download a URL list (CSV, JSONL, Parquet) into webdataset shards in the store.

    Writes images/{dataset}/{shard:05d}.tar and .stats.json per shard, once: a
    shard already fetched is skipped. Tuning: VSEARCH_FETCH_* settings.
    """
    from tqdm import tqdm

    from vsearch.sources import SourceError, open_source
    from vsearch.sources.urls import UrlListSource

    source = open_source(url_list, store=ctx.store, **_url_options(ctx, dataset))
    if not isinstance(source, UrlListSource):
        raise SourceError(f"{url_list}: fetch takes a URL list (.csv, .tsv, .jsonl, .parquet)")
    for spec in _pick(source.partitions(), partitions):
        rows = spec["stop"] - spec["start"]
        with tqdm(total=rows, desc=f"shard {spec['index']:05d}", unit="url") as bar:
            stats = source.fetch(spec, progress=bar.update)
        line = f"images/{source.dataset}/{spec['index']:05d}.tar: {stats['ok']} ok, "
        click.echo(line + f"{stats['failed']} failed ({_reasons(stats['reasons'])})")


@click.command()
@click.argument("source_uri")
@click.option("--snapshot", "snapshot_id", required=True, help="Snapshot id, YYYYMMDDTHHMMSSZ.")
@click.option("--encoder", "encoder_spec", help="Encoder spec (default: VSEARCH_ENCODER).")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these partitions.")
@click.option("--batch-size", type=int, help="Images per model call.")
@click.option("--workers", type=int, help="Decode threads (default: one per core).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32")
@click.option("--dataset", help="URL lists: name under images/.")
@pass_context
def embed(
    ctx: Context,
    source_uri: str,
    snapshot_id: str,
    encoder_spec: str | None,
    partitions: tuple[int, ...],
    batch_size: int | None,
    workers: int | None,
    dtype: str,
    dataset: str | None,
) -> None:
    """Embed SOURCE_URI into embeddings/{snapshot}/part-XXXXX.* in the store.

    SOURCE_URI: a directory, tar shard(s) (a glob), store:PREFIX, s3://bucket/prefix
    or a URL list. Finished partitions are skipped; bad images are recorded in
    each partition's failures file.
    """
    from tqdm import tqdm

    from vsearch.embed import embed_partition
    from vsearch.encoders import EncoderUnavailable, load_encoder
    from vsearch.manifest import check_snapshot_id
    from vsearch.sources import open_source

    check_snapshot_id(snapshot_id)
    s = ctx.settings
    source = open_source(source_uri, store=ctx.store, **_source_options(ctx, source_uri, dataset))
    chosen = _pick(source.partitions(), partitions)
    try:
        encoder = load_encoder(encoder_spec or s.encoder, device=s.device or None)
    except EncoderUnavailable as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"encoder {encoder.encoder_id} on {getattr(encoder, 'device', 'cpu')}", err=True)
    total_ok = total_failed = 0
    for spec in chosen:
        with tqdm(desc=f"partition {spec['index']:05d}", unit="img") as bar:
            record = embed_partition(
                ctx.store,
                snapshot_id,
                spec["index"],
                source.items(spec),
                encoder,
                batch_size=batch_size or s.embed_batch_size,
                num_workers=workers or s.embed_workers or None,
                input_fingerprint=source.fingerprint(spec),
                dtype=dtype,
                progress=bar.update,
            )
            already_done = bar.n == 0 and record.count + record.failures > 0
        total_ok, total_failed = total_ok + record.count, total_failed + record.failures
        reasons = _reasons(record.stats.get("failed_by_reason", {}))
        click.echo(
            f"part-{spec['index']:05d}: {record.count} embedded, {record.failures} failed"
            + (f" ({reasons})" if reasons else "")
            + (" (already done)" if already_done else "")
        )
    click.echo(f"{len(chosen)} partition(s): {total_ok} embedded, {total_failed} failed")


COMMANDS = [fetch, embed]
