"""HTML of the snapshots pages: the list, one snapshot's detail, and error pages.

Every value read from the store goes through ``_e`` (``html.escape``): a manifest is
written by a pipeline run, and a source path or a run id must never become markup.
Links are relative, so the pages work under any ``[api] base_url`` and inside the
UI's frame: the list is served at ``vsearch/``, a snapshot at ``vsearch/snapshots/{id}``.
The pages fit narrow windows: tables scroll inside their own box, long ids wrap,
and the list keeps only id, status, vectors and size below 640 px.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from vsearch.manifest import Manifest
from vsearch_airflow.curve_svg import CURVE_CSS, curve_svg
from vsearch_airflow.snapshot_data import SnapshotDetail

CSS = (
    "body{font-family:system-ui,sans-serif;margin:16px;color:#1a1a1a;line-height:1.4}"
    "h2{overflow-wrap:anywhere}a{color:#0b62c4}"
    ".scroll{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4;white-space:nowrap}.num{text-align:right;white-space:nowrap}"
    "tfoot td{font-weight:bold}"
    ".id,code,dd{overflow-wrap:anywhere}"
    ".clip{display:block;max-width:18em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}"
    ".status{padding:1px 6px;border-radius:8px;background:#eee;font-size:90%}"
    ".status.live{background:#c8e6c9}.status.newer{background:#fff3c4}"
    ".status.unreadable{background:#ffcdd2}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}"
    "dt{color:#555}dd{margin:0}ul.plain{margin:0;padding-left:1.2em}"
    "@media (max-width:640px){body{margin:8px}td,th{padding:4px 6px}.wide{display:none}"
    "dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:6px}}"
)


def _e(value: Any) -> str:
    """A value as escaped text; floats (recalls) with 4 decimals, None as a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{CSS}{CURVE_CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


def render_error(status: int, message: str, list_href: str) -> str:
    """An error page (a bad or unknown snapshot id, ...) with a way back to the list."""
    return page(
        f"vsearch snapshots: {status}",
        f"<p><a href='{_e(list_href)}'>← all snapshots</a></p>"
        f"<h2>{status}</h2><p class='error'>{_e(message)}</p>",
    )


def _clip(text: str) -> str:
    return f"<span class='clip' title='{_e(text)}'>{_e(text)}</span>"


def _table(head: Sequence[tuple[str, str]], rows: Iterable[str], foot: str = "") -> str:
    ths = "".join(f"<th class='{cls}'>{_e(name)}</th>" for name, cls in head)
    tfoot = f"<tfoot>{foot}</tfoot>" if foot else ""
    table = f"<table><thead><tr>{ths}</tr></thead>{tfoot}<tbody>{''.join(rows)}</tbody></table>"
    return f"<div class='scroll'>{table}</div>"


def _tr(cells: Sequence[tuple[str, str]]) -> str:
    return "<tr>" + "".join(f"<td class='{cls}'>{html_}</td>" for html_, cls in cells) + "</tr>"


LIST_HEAD = (("snapshot", ""), ("vectors", "num"), ("size", "num"),
             ("image→image@10", "num wide"), ("text→image@10", "num wide"),
             ("index", "wide"), ("encoder", "wide"))  # fmt: skip


def render_list(rows: list[dict[str, Any]], store_url: str) -> str:
    """The list page: one row per snapshot (``snapshot_rows``), each linking to its detail."""

    def row(r: dict[str, Any]) -> str:
        sid, status = r["snapshot_id"], r["status"]
        link = f"<a href='snapshots/{_e(quote(sid, safe=''))}'>{_e(sid)}</a>"
        badge = f"<span class='status {_e(status)}'>{_e(status)}</span>"
        if "error" in r:
            why = f"<td colspan='{len(LIST_HEAD) - 1}'>{_e(r['error'])}</td>"
            return f"<tr><td class='id'>{link} {badge}</td>{why}</tr>"
        return _tr([
            (f"{link} {badge}", "id"),
            (_e(r["vectors"]), "num"),
            (f"<span title='{_e(r['bytes'])} bytes'>{human_bytes(r['bytes'])}</span>", "num"),
            (_e(r["image_to_image@10"]), "num wide"),
            (_e(r["text_to_image@10"]), "num wide"),
            (_clip(r["factory"]), "wide"),
            (_clip(r["encoder"]), "wide"),
        ])  # fmt: skip

    empty = "" if rows else "<p>No snapshot has been published yet.</p>"
    return page(
        "vsearch snapshots",
        f"<h2>vsearch snapshots</h2><p>store: <code>{_e(store_url)}</code></p>{empty}"
        + _table(LIST_HEAD, (row(r) for r in rows)),
    )


def _snapshot_link(snapshot_id: str | None) -> str:
    """A sibling detail page (the detail is at ``snapshots/{id}``, so a bare id is one)."""
    if snapshot_id is None:
        return "&ndash;"
    return f"<a class='id' href='{_e(quote(snapshot_id, safe=''))}'>{_e(snapshot_id)}</a>"


def _run_link(dag_id: str | None, run_id: str | None) -> str:
    """The run's page in the Airflow UI (``dags/{dag_id}/runs/{run_id}``, two levels up),
    opened in the whole window: inside the UI, this page is in a frame."""
    if dag_id is None or run_id is None:
        return f"{_e(dag_id)} / {_e(run_id)} (not built by an Airflow run)"
    href = f"../../dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f"<a class='id' href='{_e(href)}' target='_top'>{_e(dag_id)} / {_e(run_id)}</a>"


def _dl(items: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _index_text(m: Manifest) -> str:
    i = m.index
    parts = [f"nlist {i.nlist}" if i.nlist else "",
             f"PQ {i.m}x{i.nbits} bits" if i.m else "", "OPQ" if i.opq else "",
             f"refine {i.refine}" if i.refine else "",
             f"default nprobe {i.default_nprobe}" if i.default_nprobe else ""]  # fmt: skip
    details = ", ".join(p for p in parts if p)
    return f"<code>{_e(i.factory)}</code>" + (f" ({_e(details)})" if details else "")


def _curve_section(d: SnapshotDetail) -> str:
    r, points = d.report, d.curve
    facts = [("curve from", f"<code>{_e(d.curve_source)}</code>")]
    if r is not None:
        verdict = "passed" if r.gate.passed else "FAILED"
        text = r.queries.text_to_image
        facts += [
            ("target recall@10", _e(r.target_recall)),
            ("gate", f"<strong>{verdict}</strong>: {_e(r.gate.reason)}"),
            ("queries", f"{r.queries.image_to_image} image" + (f", {text} text" if text else "")),
        ]
    if not points:
        exact = "an exact index: recall is 1 by construction, no nprobe to sweep"
        return "<h3>Recall against latency</h3>" + _dl([*facts, ("curve", exact)])
    default = r.default_nprobe if r else d.manifest.index.default_nprobe
    facts.append(("default nprobe", f"{_e(default)} (the larger point)"))
    svg = curve_svg(
        points,
        target_recall=r.target_recall if r else None,
        budget_ms=r.latency.max_query_ms if r else None,
        default_nprobe=default,
    )
    rows = (_tr([(_e(n), "num"), (_e(rec), "num"), (f"{ms:.4g}", "num")]) for n, rec, ms in points)
    table = _table((("nprobe", "num"), ("recall@10", "num"), ("ms/query", "num")), rows)
    points_table = f"<details><summary>the points</summary>{table}</details>"
    return f"<h3>Recall against latency</h3>{svg}{_dl(facts)}{points_table}"


def _lineage_section(d: SnapshotDetail) -> str:
    m, lin, enc = d.manifest, d.manifest.lineage, d.manifest.encoder
    sources = "".join(f"<li><code>{_e(s)}</code></li>" for s in lin.sources)
    items = [
        ("created", _e(m.created_at)),
        ("previous snapshot", _snapshot_link(m.previous_snapshot_id)),
        ("Airflow run", _run_link(lin.dag_id, lin.run_id)),
        ("sources", f"<ul class='plain'>{sources}</ul>" if sources else "&ndash;"),
        ("items", f"{_e(lin.item_count)} read, {_e(lin.failures)} failed"),
        ("delta watermark", f"<code>{_e(m.delta_watermark)}</code>"),
        ("encoder", f"{_e(enc.name)} <code>{_e(enc.model_id)}</code> @ {_e(enc.revision)}, "
                    f"{_e(enc.dim)}-d{', normalized' if enc.normalized else ''}"),
        ("metric", _e(m.metric)),
        ("index factory", _index_text(m)),
        ("recall@10", f"image→image {_e(m.recall.image_to_image_at_10)}, "
                      f"text→image {_e(m.recall.text_to_image_at_10)}"),
    ]  # fmt: skip
    rec = d.record
    if rec is not None:
        items += [
            ("run kind", _e(rec.kind)),
            ("encoder spec", f"<code>{_e(rec.encoder_spec)}</code>"),
            ("partitions", _e(rec.partitions)),
            ("compacted from", _snapshot_link(rec.base_snapshot_id)),
        ]
    note = "" if rec else "<p>No run record (<code>build.json</code>) for this snapshot.</p>"
    return "<h3>Lineage</h3>" + _dl(items) + note


def _shards_section(m: Manifest) -> str:
    rows = (_tr([(f"<code>{_e(s.uri)}</code>", "id"), (_e(s.bytes), "num"),
                 (_e(s.ntotal), "num"), (f"{s.id_range[0]}&ndash;{s.id_range[1]}", "num")])
            for s in m.shards)  # fmt: skip
    total = sum(s.bytes for s in m.shards)
    foot = _tr([(f"{len(m.shards)} shards", ""), (f"{total} ({human_bytes(total)})", "num"),
                (_e(m.ntotal), "num"), ("", "")])  # fmt: skip
    head = (("uri", ""), ("bytes", "num"), ("ntotal", "num"), ("id range", "num"))
    meta = m.metadata
    meta_bytes = human_bytes(sum(f.bytes for f in meta.files))
    notes = [f"metadata: {len(meta.files)} file(s), {meta_bytes}, {meta.count} rows"]
    if m.thumbnails is not None:  # schema 2: packs of thumbnails, often the largest part
        packs = m.thumbnails.packs
        size = human_bytes(sum(p.pack.bytes + p.table.bytes for p in packs))
        notes.append(f"thumbnails: {m.thumbnails.count} in {len(packs)} pack(s), {size}")
    return "<h3>Shards</h3>" + _table(head, rows, foot) + "".join(f"<p>{n}</p>" for n in notes)


def render_detail(d: SnapshotDetail, service_url: str) -> str:
    """A snapshot's page: its curve, lineage and shards, and a link to search it."""
    sid, status = d.manifest.snapshot_id, d.status
    search = f"{service_url.rstrip('/')}/?snapshot={quote(sid, safe='')}"
    head = (
        "<p><a href='../'>← all snapshots</a></p>"
        f"<h2>{_e(sid)} <span class='status {_e(status)}'>{_e(status)}</span></h2>"
        f"<p><a class='search' href='{_e(search)}' target='_blank' rel='noopener'>"
        "Search this snapshot on the query service</a></p>"
    )
    return page(f"vsearch snapshot {sid}", head + _curve_section(d) + _lineage_section(d)
                + _shards_section(d.manifest))  # fmt: skip
