"""The ``vsearch`` console script: every stage of the pipeline, outside Airflow too.

Exit codes (stable, for scripts):

==  ==========================================================
0   success (including "nothing to do": already current, already done)
1   unexpected failure (a bug, or an infrastructure error such as S3 being down)
2   usage error (bad option or argument)
3   not found (no such object, snapshot or CURRENT)
4   conflict (lost a compare-and-swap, manifest exists with other content)
5   refused (verification failed, malformed manifest, invalid setting or key)
==  ==========================================================
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from vsearch.catalog import PublishConflict, PublishError, SnapshotNotFound, VerificationError
from vsearch.config import ConfigError, Settings
from vsearch.manifest import ManifestError
from vsearch.storage import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    PreconditionFailed,
    StoreError,
    open_store,
)

EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_REFUSED = 1, 3, 4, 5

_EXIT_CODES: list[tuple[type[BaseException] | tuple[type[BaseException], ...], int]] = [
    ((ObjectNotFound, SnapshotNotFound), EXIT_NOT_FOUND),
    ((PublishConflict, PreconditionFailed), EXIT_CONFLICT),
    ((VerificationError, ManifestError, ConfigError, InvalidKey, ValueError), EXIT_REFUSED),
    ((PublishError, StoreError), EXIT_FAILURE),
]


class Context:
    """Per-invocation state: the settings and, on first use, the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(settings=self.settings)
        return self._store


class _Group(click.Group):
    """Turns known errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as e:
            for types, code in _EXIT_CODES:
                if isinstance(e, types):
                    click.echo(f"error: {e}", err=True)
                    ctx.exit(code)
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", envvar="VSEARCH_DATA_DIR", help="Root of the embedded defaults.")
@click.option(
    "--store",
    envvar="VSEARCH_STORE",
    help="Object store: a directory, file:///path or s3://bucket/prefix.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(package_name="vsearch")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None, store: str | None, verbose: int) -> None:
    """vsearch: build, publish and serve image-search index snapshots.

    Settings come from options, then VSEARCH_* environment variables, then the
    embedded defaults (everything under ./vsearch-data, no servers needed).
    """
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.load(data_dir=data_dir, store=store)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        ctx.exit(EXIT_REFUSED)
    ctx.obj = Context(settings)


def _register() -> None:
    """Add the ``COMMANDS`` of every module in this package: a new stage adds a file
    (modules without ``COMMANDS`` are helpers of the commands)."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        for command in getattr(
            importlib.import_module(f"{__name__}.{module.name}"), "COMMANDS", []
        ):
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
