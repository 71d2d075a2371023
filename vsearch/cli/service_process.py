"""The query service as a process: the server's command line (``service/server.py``:
waitress), a launcher that waits for ``/readyz``, and a small JSON client. ``vsearch
serve``, ``vsearch demo``, the tests and the benchmarks start the service this one way.

The service itself (``service/``) is a Flask app; nothing here imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vsearch.config import Settings

APP = "service.app:create_app()"


def server_command(app: str = APP) -> list[str]:
    """The service's server (service/server.py) under this interpreter, serving ``app``."""
    return [sys.executable, "-m", "service.server", app]


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its ``VSEARCH_*`` variable: how settings reach the workers."""
    return {
        f"VSEARCH_{f.name.upper()}": str(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """(status, parsed JSON) of one request; HTTP errors are answers, not exceptions."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@contextlib.contextmanager
def running_service(
    env: Mapping[str, str],
    *,
    log_path: Path | None = None,
    ready_timeout: float = 120,
    app: str = APP,
    cwd: Path | None = None,
    ready_path: str = "/readyz",
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[str]:
    """The service's server running ``app`` on a free loopback port; yields its base URL.

    ``env`` holds VSEARCH_* settings; the bind address is chosen here and the access
    log is off. Waits for ``ready_path`` (``/healthz``: only up, no snapshot needed);
    stops the server (SIGTERM, then SIGKILL) on exit. ``preexec_fn`` runs in the child
    before the server starts (e.g. to set resource limits).
    """
    port = free_port()
    full_env = {
        **os.environ,
        **env,
        "VSEARCH_SERVICE_BIND": f"127.0.0.1:{port}",
        "VSEARCH_SERVICE_ACCESS_LOG": "",
    }
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        server_command(app),
        cwd=cwd,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec_fn,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode} (log: {log_path})")
            with contextlib.suppress(OSError):
                if http_json("GET", f"{base}{ready_path}", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the service was not ready within {ready_timeout}s (log: {log_path})"
                )
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            out.close()  # type: ignore[union-attr]
