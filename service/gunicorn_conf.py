"""gunicorn settings: ``gunicorn -c python:service.gunicorn_conf "service.app:create_app()"``.

Threaded workers (``gthread``): faiss, numpy and the encoder release the GIL
while they compute, so one process with N threads serves N requests at once
over ONE copy of the index. Memory per worker is therefore about

    sum(shard bytes) of the served snapshot   (faiss keeps the index in RAM)
    + the same again while a new snapshot loads before a swap
    + the delta (n_items x dim x 4 bytes) + the query encoder (CLIP: ~600 MB)
    + ~150 MB of Python, Flask and faiss.

Every worker process would hold all of that again (indexes are read into
memory, not shared by fork), which is why the default is ONE worker per
container with many threads, and replicas scale out behind a load balancer.
``preload_app`` stays off: snapshots load in the worker, after the fork, with
their threads. Settings: VSEARCH_SERVICE_BIND, VSEARCH_SERVICE_WORKERS,
VSEARCH_SERVICE_THREADS (see vsearch.config).
"""

from __future__ import annotations

from vsearch.config import Settings

_settings = Settings.load()

bind = _settings.service_bind
workers = _settings.service_workers
threads = _settings.service_threads
worker_class = "gthread"
preload_app = False
timeout = 60  # a request (or a stuck worker) longer than this is killed and restarted
graceful_timeout = 30  # in-flight requests finish on SIGTERM
keepalive = 5
accesslog = _settings.service_access_log or None  # VSEARCH_SERVICE_ACCESS_LOG
errorlog = "-"
loglevel = "info"
# Bounds on the request line and headers; bodies are bounded by the app (max_request_mb).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
