"""The query service's HTTP server: ``python -m service.server ["service.app:create_app()"]``.

waitress, not gunicorn's gthread worker, because of slow clients (measured in
bench/results/slow_clients.md). gthread reads each request's headers and body on one
of its N threads, so N slowloris, slow-upload or silent connections take every thread
and nobody else is answered. waitress reads requests on one I/O loop, spools bodies
(to a temporary file above 512 KB), and hands a thread only a complete request: a slow
or idle client holds a socket, never a thread, and a body whose Content-Length is
above ``max_request_mb`` is refused (413) before any of it is read.

One process with N threads serves N requests at once over one copy of the index
(faiss, numpy and the encoders release the GIL while they compute). Shards are
memory-mapped (service/snapshots/snapshot_loader.py): their codes live in the page cache, shared
by every process on the host, so memory per process is about

    what faiss copies out of the shards (quantizers, OPQ, id maps: /metrics
    vsearch_snapshot_bytes{kind="private"}), again while a new snapshot loads
    + the delta (n_items x dim x 4 bytes) + the query encoder (CLIP: ~600 MB)
    + ~150 MB of Python, Flask and faiss,

and once per host the shard files' scanned part in the page cache. A second worker
process therefore costs its private part, not the index again. Its Python and encoder
are its own, and so is its GIL: with many cores, workers x threads beats one process
with more threads (docs/service.md "Memory per worker, and how many workers"). With more workers the
socket is bound here and each forked worker builds its own app (snapshots load after
the fork, with their threads). Settings: VSEARCH_SERVICE_BIND, VSEARCH_SERVICE_WORKERS,
VSEARCH_SERVICE_THREADS, VSEARCH_SERVICE_ACCESS_LOG (see vsearch.config).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from typing import Any

from waitress import wasyncore  # type: ignore[import-untyped]
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.server import create_server  # type: ignore[import-untyped]
from waitress.task import ErrorTask  # type: ignore[import-untyped]

from vsearch.config import Settings

log = logging.getLogger("service.server")

APP = "service.app:create_app()"
# Open connections one process holds, idle ones included; beyond it new ones wait in the
# listen backlog. The file-descriptor limit is raised to fit (see raise_fd_limit).
CONNECTION_LIMIT = 10_000
# A connection with nothing sent or received for this long is closed (idle keep-alive,
# a stalled upload); one whose request is being answered is not.
IDLE_TIMEOUT_S = 15
# In-flight requests get this long to finish on SIGTERM: less than the 30 s Docker
# (compose's stop_grace_period) waits before it kills.
GRACEFUL_TIMEOUT_S = 25
# The request line and headers together; bodies are bounded by max_request_mb.
MAX_HEADER_BYTES = 64 * 1024
_FDS_SPARE = 1024  # shard files, the store, Redis, logs


def server_options(settings: Settings) -> dict[str, Any]:
    """waitress's adjustments for these settings."""
    return {
        "threads": settings.service_threads,
        "connection_limit": CONNECTION_LIMIT,
        "channel_timeout": IDLE_TIMEOUT_S,
        "cleanup_interval": 5,
        # Content-Length >= this is a 413 before the body is read; Flask's own
        # MAX_CONTENT_LENGTH refuses above max_request_mb, so allow exactly that much.
        "max_request_body_size": int(settings.max_request_mb * 2**20) + 1,
        "max_request_header_size": MAX_HEADER_BYTES,
        # select() cannot watch descriptors above 1024: thousands of connections need poll.
        "asyncore_use_poll": True,
        "backlog": 2048,
        "ident": "vsearch",
    }


def raise_fd_limit(wanted: int = CONNECTION_LIMIT + _FDS_SPARE) -> int:
    """Raise this process's soft limit on open files towards ``wanted``; return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("open files limited to %d: fewer connections than %d fit", soft, wanted)
    return int(soft)


def listen(bind: str, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``[::]:8000`` for IPv6)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family, kind, proto, _, address = socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(backlog)
    return sock


def load_app(spec: str) -> Any:
    """``module:name`` or ``module:factory()``: the WSGI app."""
    module_name, _, name = spec.partition(":")
    call = name.endswith("()")
    obj = getattr(importlib.import_module(module_name), name.removesuffix("()") or "app")
    return obj() if call else obj


class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's own refusals (400, 413, 431, 501) in the service's error format."""

    def execute(self) -> None:
        error = self.request.error
        message = str(error.body)
        if error.code == 413:
            limit = self.channel.server.adj.max_request_body_size - 1
            message = f"the request body is larger than {limit} bytes (max_request_mb)"
        reason = "_".join(error.reason.lower().split())  # request_entity_too_large, as Flask's
        body = json.dumps({"error": {"code": reason, "message": message}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):  # type: ignore[misc]
    error_task_class = JsonErrorTask


def build_server(app: Any, sock: socket.socket, settings: Settings) -> Any:
    """A waitress server on the already-bound ``sock``."""
    server = create_server(app, map={}, sockets=[sock], **server_options(settings))
    server.channel_class = JsonErrorChannel
    return server


def serve(sock: socket.socket, app_spec: str, settings: Settings) -> int:
    """Serve on ``sock`` in this process until SIGTERM or SIGINT, then drain."""
    app = load_app(app_spec)
    if settings.service_access_log:
        from service.access_log import AccessLog, access_logger

        app = AccessLog(app, access_logger(settings.service_access_log))
    server = build_server(app, sock, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(
        "serving %s on http://%s with %d threads",
        app_spec,
        settings.service_bind,
        settings.service_threads,
    )
    while not stop.is_set():  # the poll wakes at least every 0.5 s to see the flag
        wasyncore.loop(timeout=0.5, map=server._map, use_poll=True, count=1)
    drain(server, time.monotonic() + GRACEFUL_TIMEOUT_S)
    return 0


def drain(server: Any, deadline: float) -> None:
    """Stop accepting, let the requests already received finish and be sent, then stop."""
    server.accepting = False
    server.del_channel()
    server.socket.close()  # new connections are refused at once (the proxy retries them)

    def busy() -> bool:
        return any(
            ch.requests or ch.total_outbufs_len for ch in list(server.active_channels.values())
        )

    while busy() and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.1, map=server._map, use_poll=True, count=1)
    if busy():
        log.warning("stopping with requests still in flight after %ss", GRACEFUL_TIMEOUT_S)
    server.task_dispatcher.shutdown(timeout=1)
    wasyncore.close_all(server._map)


def run_workers(sock: socket.socket, app_spec: str, settings: Settings) -> int:
    """Fork ``service_workers`` processes serving the one socket; stop them all together.

    A worker that dies stops the rest and the exit code says so: the container (or
    systemd) restarts the whole replica, rather than this process booting a worker
    that loads a snapshot while the others serve.
    """
    workers: set[int] = set()
    stopping = False

    def stop_all(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for _ in range(settings.service_workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = serve(sock, app_spec, settings)
            except BaseException:
                log.exception("worker failed")
            finally:
                os._exit(code)
        workers.add(pid)
    sock.close()  # the workers hold it; once they close theirs, connections are refused
    status = 0
    while workers:
        pid, raw = os.wait()
        workers.discard(pid)
        code = os.waitstatus_to_exitcode(raw)
        if not stopping:
            log.error("worker %d exited with %d: stopping the others", pid, code)
            status = code if code > 0 else 1
            stop_all()
    return status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        raise SystemExit(f"usage: python -m service.server [{APP}]")
    app_spec = args[0] if args else APP
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it tried
    # "Task queue depth is N" for every request that waits for a free thread: noise.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    settings = Settings.load()
    raise_fd_limit()
    sock = listen(settings.service_bind, server_options(settings)["backlog"])
    if settings.service_workers == 1:
        return serve(sock, app_spec, settings)
    return run_workers(sock, app_spec, settings)


if __name__ == "__main__":
    sys.exit(main())
