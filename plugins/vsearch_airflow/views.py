"""The "vsearch snapshots" pages in the Airflow UI: the published snapshots, and per
snapshot its recall-latency curve, lineage, shard sizes and a link to search it.

Served by the API server as a FastAPI app under ``/vsearch`` and shown in the UI's
navigation as an external view (Airflow 3.1+ plugin interfaces; ``vsearch_plugin.py``):
``/vsearch/`` (the list), ``/vsearch/snapshots/{id}`` (one snapshot) and
``/vsearch/api/snapshots`` (the list as JSON).

Permissions. Airflow does not authenticate a plugin's app: it is attached with
``app.mount`` and none of the core API's router dependencies reach its routes. So the
app depends, for every route, on the check Airflow's own Dag-run views use:
``requires_access_dag("GET", DagAccessEntity.RUN)`` from
``airflow/api_fastapi/core_api/security.py`` (as in ``core_api/routes/ui/dag_runs.py``
and ``routes/ui/grid.py``), once per DAG that publishes snapshots. It finds the user
with ``get_user`` there: the ``Authorization: Bearer`` JWT, else the ``_token`` cookie
the login page sets. No token is a 401, an invalid or expired one a 401/403, a user
who may not read those DAGs' runs a 403.

Why Dag-run read access and not ``requires_access_view(AccessView.PLUGINS)``: a snapshot
is what a run of these DAGs produced (its lineage names the run, its sources are the
run's input), so whoever may read those runs may read this page, and per-DAG access
control and teams apply as in the grid. ``AccessView.PLUGINS`` is the right to list
installed plugins: the FAB auth manager (the compose stack) grants it to Op and Admin
only, which would lock a Viewer out of data the grid already shows them. (The nav
entry itself comes from ``/api/v2/plugins``, which needs PLUGINS; a Viewer opens the
page by its address.) With the SimpleAuthManager of ``vsearch airflow up`` every role
may read Dag runs; a user with no role is refused.

A browser (``Accept: text/html``) without a valid token is sent to Airflow's login
page and back, as the UI's own client does on a 401 (``api/v2/auth/login?next=...``);
other clients get the 401/403 as JSON, like the REST API.

Airflow's security module belongs to the API server, and every task process loads
plugins too (for macros): the app, and that import, are made on the first request.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from vsearch.catalog import SnapshotNotFound
from vsearch.config import Settings
from vsearch.manifest import ManifestError, check_snapshot_id
from vsearch_airflow.hooks import VsearchStoreHook
from vsearch_airflow.snapshot_data import load_detail, snapshot_rows
from vsearch_airflow.snapshot_pages import render_detail, render_error, render_list

log = logging.getLogger(__name__)

# The DAGs whose runs publish snapshots (dags/vsearch_build_index.py, vsearch_compact.py).
SNAPSHOT_DAGS = ("vsearch_build_index", "vsearch_compact")


class SnapshotsApp:
    """The ASGI app the plugin mounts: builds ``create_app()`` on its first request."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


def snapshot_readers() -> list[Any]:
    """Airflow's own dependencies: may the user read the runs of every snapshot DAG?"""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return [
        Depends(requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=dag_id))
        for dag_id in SNAPSHOT_DAGS
    ]


def login_url(request: Request) -> str:
    """Airflow's login (whatever the auth manager), coming back to this page after."""
    from airflow.api_fastapi.app import get_cookie_path  # the API server's base path

    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{get_cookie_path().rstrip('/')}/api/v2/auth/login?{urlencode({'next': back})}"


def list_href(request: Request) -> str:
    """The list page, from any page of the app (its mount point, as the server sees it)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


async def refused(request: Request, exc: Exception) -> Response:
    """HTTP errors: to a browser, the login page (no or bad token) or an HTML page."""
    assert isinstance(exc, HTTPException)
    if "text/html" not in request.headers.get("accept", ""):
        return await http_exception_handler(request, exc)
    if exc.status_code == 401 or (exc.status_code == 403 and exc.detail == "Invalid JWT token"):
        return RedirectResponse(login_url(request))
    page = render_error(exc.status_code, str(exc.detail), list_href(request))
    return HTMLResponse(page, status_code=exc.status_code)


def snapshot_page(snapshot_id: str) -> tuple[int, str]:
    """(status, HTML) of a snapshot's page: 400 for an invalid id, 404 for an unknown one."""
    try:
        check_snapshot_id(snapshot_id)
    except ValueError as e:
        return 400, render_error(400, str(e), "../")
    try:
        detail = load_detail(VsearchStoreHook().get_store(), snapshot_id)
    except SnapshotNotFound as e:
        return 404, render_error(404, str(e), "../")
    except ManifestError as e:  # a damaged manifest: the store's fault, said plainly
        log.error("manifest of %s unreadable: %s", snapshot_id, e)
        return 500, render_error(500, f"the manifest of {snapshot_id} is unreadable: {e}", "../")
    return 200, render_detail(detail, Settings.load().service_url)


def create_app() -> FastAPI:
    # No /docs or /openapi.json: app-level dependencies do not cover them.
    app = FastAPI(title="vsearch snapshots", dependencies=snapshot_readers(),
                  docs_url=None, redoc_url=None, openapi_url=None)  # fmt: skip
    app.add_exception_handler(HTTPException, refused)

    @app.get("/api/snapshots")
    def api_snapshots() -> list[dict[str, Any]]:
        return snapshot_rows(VsearchStoreHook().get_store())

    @app.get("/", response_class=HTMLResponse)
    def snapshots() -> str:
        store = VsearchStoreHook().get_store()
        return render_list(snapshot_rows(store), store.url)

    @app.get("/snapshots/{snapshot_id}", response_class=HTMLResponse)
    def snapshot(snapshot_id: str) -> HTMLResponse:
        status, page = snapshot_page(snapshot_id)
        return HTMLResponse(page, status_code=status)

    return app
