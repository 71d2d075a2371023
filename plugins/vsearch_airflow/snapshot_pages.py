"""HTML of the snapshots pages: the list, one snapshot's detail, and error pages.

The pages are Jinja2 templates (``templates/``: ``list.html``, ``detail.html``,
``error.html`` on ``base.html``); ``html_templates`` escapes every value they write.
Links are relative, so the pages work under any ``[api] base_url`` and inside the
UI's frame: the list is served at ``vsearch/``, a snapshot at ``vsearch/snapshots/{id}``.
The pages fit narrow windows (``templates/snapshots.css``): tables scroll inside their
own box, long ids wrap, and the list keeps only id, status, vectors and size below
640 px.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from vsearch.manifest import IndexInfo
from vsearch_airflow.curve_svg import curve_svg
from vsearch_airflow.html_templates import render
from vsearch_airflow.snapshot_data import SnapshotDetail


def render_error(status: int, message: str, list_href: str) -> str:
    """An error page (a bad or unknown snapshot id, ...) with a way back to the list."""
    return render("error.html", status=status, message=message, list_href=list_href)


def render_list(rows: list[dict[str, Any]], store_url: str) -> str:
    """The list page: one row per snapshot (``snapshot_rows``), each linking to its detail."""
    return render("list.html", rows=rows, store_url=store_url)


def index_details(i: IndexInfo) -> str:
    """The index's parameters in words: "nlist 16, PQ 8x8 bits, OPQ, ..."."""
    parts = [f"nlist {i.nlist}" if i.nlist else "",
             f"PQ {i.m}x{i.nbits} bits" if i.m else "", "OPQ" if i.opq else "",
             f"refine {i.refine}" if i.refine else "",
             f"default nprobe {i.default_nprobe}" if i.default_nprobe else ""]  # fmt: skip
    return ", ".join(p for p in parts if p)


def render_detail(d: SnapshotDetail, service_url: str) -> str:
    """A snapshot's page: its curve, lineage and shards, and a link to search it."""
    r, points = d.report, d.curve
    default_nprobe = r.default_nprobe if r else d.manifest.index.default_nprobe
    svg = None
    if points:  # an exact index has no curve: recall is 1 at any nprobe
        svg = curve_svg(
            points,
            target_recall=r.target_recall if r else None,
            budget_ms=r.latency.max_query_ms if r else None,
            default_nprobe=default_nprobe,
        )
    return render(
        "detail.html",
        d=d,
        m=d.manifest,
        r=r,
        rec=d.record,
        points=points,
        default_nprobe=default_nprobe,
        # Rendered by its own template, with every value escaped there.
        svg=None if svg is None else Markup(svg),
        index_details=index_details(d.manifest.index),
        service_url=service_url.rstrip("/"),
    )
