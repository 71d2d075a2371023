"""The Flask application factory: ``create_app(config)``.

Serve it with the service's server (waitress; see ``service/server.py``)::

    python -m service.server            # or: vsearch serve

Settings come from ``VSEARCH_*`` (``vsearch.config.Settings``). ``config`` may
override any setting by its upper-case name (``{"STORE": "/data", "MAX_K": 50}``)
and inject parts:

==========================  =====================================================
``SETTINGS``                a whole ``Settings`` (instead of reading the environment)
``ENCODER``                 an ``Encoder`` for text/image queries (default: the
                            ``query_encoder`` setting, else the encoder the served
                            snapshot was built with: ``service.queries.query_encoder``)
``STORE_OBJECT``            an ``ObjectStore`` instance
``FETCH_POLICY``            the image-URL address policy (``vsearch.serving.safe_fetch``);
                            the ``image_fetch_allow`` hosts are admitted beside it
``MEMORY_BUDGET_BYTES``     the snapshot memory budget, in bytes
``MAX_IMAGE_PIXELS``        decoded image size limit (default 40 M pixels)
``LOAD_ON_START``           ``"background"`` (default), ``"sync"`` or ``"off"``
``START_THREADS``           start the watcher and the delta tailer (default True)
==========================  =====================================================

With ``"sync"`` the factory returns once the snapshot CURRENT names is loaded
(or refused); with ``"background"`` it returns at once and ``/readyz`` answers
503 until then.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request

log = logging.getLogger(__name__)

_INJECTED = {
    "SETTINGS",
    "ENCODER",
    "STORE_OBJECT",
    "FETCH_POLICY",
    "MEMORY_BUDGET_BYTES",
    "MAX_IMAGE_PIXELS",
    "LOAD_ON_START",
    "START_THREADS",
    "TESTING",
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; see the module docstring for ``config``."""
    from service.api.items_api import bp as items_bp
    from service.api.ops_api import bp as ops_bp
    from service.api.page_api import bp as page_bp
    from service.api.search_api import bp as search_bp
    from service.api.thumbnails_api import bp as thumbnails_bp
    from service.errors import register_error_handlers
    from service.state import build_state
    from vsearch.config import Settings

    config = dict(config or {})
    field_names = {f.name for f in dataclasses.fields(Settings)}
    overrides = {}
    for key in list(config):
        if key in _INJECTED:
            continue
        name = key.lower()
        if name not in field_names:
            raise ValueError(f"create_app: unknown config key {key!r}")
        overrides[name] = config.pop(key)
    settings = config.get("SETTINGS")
    if settings is None:
        settings = Settings.load(**overrides)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=int(settings.max_request_mb * 2**20),
        TESTING=bool(config.get("TESTING", False)),
    )
    state = build_state(app, settings, config)
    app.extensions["vsearch"] = state
    register_error_handlers(app)
    app.register_blueprint(search_bp)
    app.register_blueprint(items_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(thumbnails_bp)
    app.register_blueprint(page_bp)

    @app.after_request
    def count_request(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        # Which replica answered, behind a load balancer (its REPLICA_ID, by default
        # hostname-pid: the container's id in compose).
        response.headers["X-Vsearch-Replica"] = state.replica.replica_id
        return response

    load = config.get("LOAD_ON_START", "background")
    if load not in ("background", "sync", "off"):
        raise ValueError(f"LOAD_ON_START must be background, sync or off, not {load!r}")
    if state.encoder_error is None and load == "sync":
        state.replica.tick()
    if config.get("START_THREADS", True):
        state.replica.start(load_now=load == "background" and state.encoder_error is None)
    return app


def close_app(app: Flask) -> None:
    """Stop the app's threads and release its snapshots and connections."""
    state = app.extensions.get("vsearch")
    if state is not None:
        state.close()
