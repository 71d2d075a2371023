"""``vsearch serve``: run the query service under its server (service/server.py, waitress)."""

from __future__ import annotations

import dataclasses
import os

import click

from vsearch.cli import Context
from vsearch.config import ConfigError, Settings

pass_context = click.make_pass_decorator(Context)

_DEFAULTS = Settings()  # the embedded defaults, for the help text


@click.command()
@click.option(
    "--bind",
    help=f"host:port to listen on (default: VSEARCH_SERVICE_BIND, else {_DEFAULTS.service_bind}).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (default: VSEARCH_SERVICE_WORKERS, else "
    f"{_DEFAULTS.service_workers}; shards are mapped and shared, each worker holds its own "
    "encoder and sees another worker's writes after its log tailer does; docs/service.md).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Request threads per worker (default: VSEARCH_SERVICE_THREADS, else "
    f"{_DEFAULTS.service_threads}).",
)
@pass_context
def serve(ctx: Context, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve the snapshot CURRENT names, hot-swapping to newer ones, with the live delta.

    Replaces this process with the service's server (python -m service.server:
    waitress, which reads each request in full before a thread handles it, so slow
    and idle clients hold no thread) running service.app:create_app(); every setting
    travels as its VSEARCH_* variable.

    Image and text queries are embedded with the encoder the served snapshot was
    built with, loaded on the first such query (VSEARCH_QUERY_ENCODER overrides
    it; /readyz says its state). Image URLs must resolve to public addresses,
    except hosts and networks listed in VSEARCH_IMAGE_FETCH_ALLOW
    (e.g. "images.internal,10.0.0.0/8").
    """
    settings = dataclasses.replace(
        ctx.settings,
        service_bind=bind or ctx.settings.service_bind,
        service_workers=workers or ctx.settings.service_workers,
        service_threads=threads or ctx.settings.service_threads,
    )
    from vsearch.cli.service_process import server_command, settings_env
    from vsearch.serving.safe_fetch import TrustedHosts

    try:  # refused here, with exit code 5, rather than by every worker as it boots
        TrustedHosts.parse(settings.image_fetch_allow)
    except ValueError as e:
        raise ConfigError(f"image_fetch_allow: {e}") from None
    env = {**os.environ, **settings_env(settings)}
    args = server_command()
    click.echo(f"vsearch serve: {settings.store} on http://{settings.service_bind}", err=True)
    os.execve(args[0], args, env)


COMMANDS = [serve]
