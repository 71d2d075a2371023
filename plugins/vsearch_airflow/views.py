"""A page in the Airflow UI listing snapshots with their recall, size and status.

Served by the API server as a FastAPI app under ``/vsearch`` and shown in the
navigation as an external view (Airflow 3.1+ plugin interfaces).
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from vsearch_airflow.hooks import VsearchStoreHook


def snapshot_rows(store: Any) -> list[dict[str, Any]]:
    """One row per published snapshot, newest first."""
    from vsearch.snapshots import list_snapshots, read_manifest, read_pointer

    found = read_pointer(store)
    current = found[0].snapshot_id if found else None
    rows = []
    for sid in reversed(list_snapshots(store)):
        m = read_manifest(store, sid)
        rows.append(
            {
                "snapshot_id": sid,
                "status": "live"
                if sid == current
                else ("newer" if current and sid > current else "superseded"),
                "vectors": m.ntotal,
                "shards": len(m.shards),
                "bytes": sum(s.bytes for s in m.shards),
                "image_to_image@10": m.recall.image_to_image_at_10,
                "text_to_image@10": m.recall.text_to_image_at_10,
                "encoder": f"{m.encoder.name}:{m.encoder.model_id}",
                "factory": m.index.factory,
                "delta_watermark": m.delta_watermark,
                "run_id": m.lineage.run_id,
            }
        )
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("-" if value is None else str(value))


def render(rows: list[dict[str, Any]], store_url: str) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in (rows[0] if rows else {"snapshot_id": 0}))
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    empty = "" if rows else "<p>No snapshot has been published yet.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vsearch snapshots</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
        "</style></head><body>"
        f"<h2>vsearch snapshots</h2><p>store: <code>{html.escape(store_url)}</code></p>"
        f"{empty}<table><tr>{head}</tr>{body}</table></body></html>"
    )


def create_app() -> FastAPI:
    app = FastAPI(title="vsearch snapshots")

    @app.get("/api/snapshots")
    def api_snapshots() -> list[dict[str, Any]]:
        return snapshot_rows(VsearchStoreHook().get_store())

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        store = VsearchStoreHook().get_store()
        return render(snapshot_rows(store), store.url)

    return app
