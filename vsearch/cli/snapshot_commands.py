"""``vsearch manifest``, ``vsearch publish`` and ``vsearch rollback``."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from vsearch.catalog import (
    PublishResult,
    SnapshotNotFound,
    list_snapshots,
    publish_snapshot,
    read_current,
    read_manifest,
    read_pointer,
)
from vsearch.catalog import rollback as rollback_snapshot
from vsearch.cli import Context
from vsearch.manifest import Manifest

pass_context = click.make_pass_decorator(Context)


@click.group()
def manifest() -> None:
    """Show and list published snapshot manifests."""


@manifest.command("list")
@pass_context
def list_(ctx: Context) -> None:
    """List published snapshots, oldest first; '*' marks CURRENT."""
    found = read_pointer(ctx.store)
    current = found[0].snapshot_id if found else None
    ids = list_snapshots(ctx.store)
    if not ids:
        click.echo(f"no snapshots in {ctx.store.url}", err=True)
    for sid in ids:
        m = read_manifest(ctx.store, sid)
        recall = m.recall.image_to_image_at_10
        click.echo(
            f"{'*' if sid == current else ' '} {sid}  vectors={m.ntotal}  shards={len(m.shards)}"
            f"  i2i@10={'-' if recall is None else f'{recall:.3f}'}  encoder={m.encoder.name}"
        )


@manifest.command("show")
@click.argument("snapshot_id", default="current")
@pass_context
def show(ctx: Context, snapshot_id: str) -> None:
    """Print the manifest of SNAPSHOT_ID (default: the one CURRENT names) as JSON."""
    if snapshot_id == "current":
        m = read_current(ctx.store)
        if m is None:
            raise SnapshotNotFound(f"nothing is published in {ctx.store.url}")
    else:
        m = read_manifest(ctx.store, snapshot_id)
    sys.stdout.write(m.to_json().decode())


@click.command()
@click.argument("manifest_file", type=click.File("rb"))
@click.option("--force", is_flag=True, help="Move CURRENT even to an older snapshot id.")
@click.option(
    "--no-checksums",
    is_flag=True,
    help="Check sizes only, not sha256 (faster for huge shards; less safe).",
)
@pass_context
def publish(ctx: Context, manifest_file: BinaryIO, force: bool, no_checksums: bool) -> None:
    """Verify the objects MANIFEST_FILE names, record it and move CURRENT to it.

    MANIFEST_FILE is a manifest JSON file, or '-' for standard input.
    """
    m = Manifest.from_json(manifest_file.read())
    _report(publish_snapshot(ctx.store, m, force=force, checksums=not no_checksums))


@click.command()
@click.option("--to", "to", help="Snapshot id to go back to (default: the previous one).")
@pass_context
def rollback(ctx: Context, to: str | None) -> None:
    """Point CURRENT back at an earlier, verified snapshot."""
    _report(rollback_snapshot(ctx.store, to))


def _report(result: PublishResult) -> None:
    click.echo(result.message)


COMMANDS = [manifest, publish, rollback]
