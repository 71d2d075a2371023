"""``vsearch demo``: the main job on embedded defaults (see vsearch.demo)."""

from __future__ import annotations

import click

from vsearch.cli import Context
from vsearch.demo import run_demo

pass_context = click.make_pass_decorator(Context)


@click.command()
@pass_context
def demo(ctx: Context) -> None:
    """Run the main job end to end on embedded defaults and say what it did.

    Stages that have not landed yet are replaced by synthetic data, and the
    output says so.
    """
    click.echo("vsearch demo: spine only so far — synthetic vectors, exact faiss index,")
    click.echo("real object store, real atomic publish/rollback. Embedding, training,")
    click.echo("Airflow and the query service join this job as they land.")
    run_demo(ctx.store, say=click.echo)


COMMANDS = [demo]
