"""``vsearch store``: look inside the object store."""

from __future__ import annotations

import shutil
import sys

import click

from vsearch.cli import Context

pass_context = click.make_pass_decorator(Context)


@click.group()
def store() -> None:
    """List and read objects in the store."""


@store.command("ls")
@click.argument("prefix", default="")
@click.option("-l", "--long", "long_", is_flag=True, help="Show size and etag too.")
@pass_context
def ls(ctx: Context, prefix: str, long_: bool) -> None:
    """List objects whose key starts with PREFIX."""
    for info in ctx.store.list(prefix):
        click.echo(f"{info.size:>12}  {info.etag:<36}  {info.key}" if long_ else info.key)


@store.command("cat")
@click.argument("key")
@pass_context
def cat(ctx: Context, key: str) -> None:
    """Write the object at KEY to standard output."""
    with ctx.store.open(key) as f:
        shutil.copyfileobj(f, sys.stdout.buffer)
    sys.stdout.buffer.flush()


COMMANDS = [store]
