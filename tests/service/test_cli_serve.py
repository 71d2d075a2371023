"""`vsearch serve` runs the service under its server (service/server.py) with the CLI's settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.snapshots import publish_series
from vsearch.cli.service_process import free_port, http_json
from vsearch.storage import LocalStore


def test_vsearch_serve_answers_on_the_bind_address(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (manifest,) = publish_series(store, [1], n=100)
    port = free_port()
    exe = Path(sys.executable).with_name("vsearch")
    cmd = [str(exe), "--data-dir", str(tmp_path / "data"), "--store", str(store.root), "serve"]
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--bind", f"127.0.0.1:{port}", "--threads", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                status, body = http_json("GET", f"http://127.0.0.1:{port}/readyz", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        assert body["snapshot_id"] == manifest.snapshot_id
    finally:
        proc.terminate()
        proc.wait(30)
