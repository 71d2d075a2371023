"""``vsearch serve``: run the query service under gunicorn (service/gunicorn_conf.py)."""

from __future__ import annotations

import dataclasses
import os

import click

from vsearch.cli import Context

pass_context = click.make_pass_decorator(Context)


@click.command()
@click.option("--bind", help="host:port (default: VSEARCH_SERVICE_BIND, 127.0.0.1:8080).")
@click.option("--workers", type=int, help="Worker processes (default 1: see docs/service.md).")
@click.option("--threads", type=int, help="Threads per worker (default 8).")
@pass_context
def serve(ctx: Context, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve the snapshot CURRENT names, hot-swapping to newer ones, with the live delta.

    Replaces this process with gunicorn running service.app:create_app(); every
    setting travels as its VSEARCH_* variable.
    """
    settings = dataclasses.replace(
        ctx.settings,
        service_bind=bind or ctx.settings.service_bind,
        service_workers=workers or ctx.settings.service_workers,
        service_threads=threads or ctx.settings.service_threads,
    )
    from vsearch.cli.service_process import gunicorn_command, settings_env

    env = {**os.environ, **settings_env(settings)}
    args = gunicorn_command()
    click.echo(f"vsearch serve: {settings.store} on http://{settings.service_bind}", err=True)
    os.execve(args[0], args, env)


COMMANDS = [serve]
