"""The Jinja2 environment of the snapshots pages (``templates/``): every value escaped.

A manifest is written by a pipeline run, and a source path, a caption or a run id must
never become markup, so no template writes a value as it is: ``finalize`` turns every
``{{ value }}`` into escaped text (None as a dash). It escapes with ``html.escape``,
whose ``&#x27;`` for a quote the pages have always had (markupsafe writes ``&#39;``).
Autoescaping is on, so what a template renders itself (a macro, a block; the curve's
``<svg>``) is ``Markup``, passed as it is, and a value is never escaped twice.

Numbers are formatted by name: ``recall`` (a float with 4 decimals, as recalls are
shown everywhere), ``ms`` (4 significant digits), ``tick`` (3, the curve's labels),
``human_bytes``; ``segment`` quotes a value for one segment of a relative link.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup


def escaped(value: Any) -> Markup:
    """A value as page text: escaped, None as a dash; ``Markup`` is left as it is."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("&ndash;")
    return Markup(html.escape(str(value)))


def recall(value: Any) -> Any:
    """A float with 4 decimals; anything else (an int, None) as it is."""
    return f"{value:.4f}" if isinstance(value, float) else value


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=escaped,
        # Block tags on their own lines leave no blank lines in the page.
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        recall=recall,
        ms=lambda v: f"{v:.4g}",
        tick=lambda v: f"{v:.3g}",
        human_bytes=human_bytes,
        segment=lambda v: quote(str(v), safe=""),
    )
    return env


ENV = _environment()


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)
