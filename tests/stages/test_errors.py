"""Which stage errors a retry cannot fix: those fail an Airflow task at once (run_stage),
the others are retried with backoff."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.servers import aws_test_credentials, free_port
from vsearch import stages
from vsearch.catalog import PublishConflict
from vsearch.delta import DeltaWrite, open_delta_log
from vsearch.index import RecallGateFailed, SpecError
from vsearch.sources import SourceError
from vsearch.storage import ObjectNotFound, StoreError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "error",
    [
        SpecError("no index fits"),
        RecallGateFailed("gate", "indexes/x/report.json"),
        SourceError("no images"),
        stages.StageError("no sources"),
        ObjectNotFound("indexes/x/trained.json"),
        ValueError("bad parameter"),
    ],
)
def test_permanent(error: Exception) -> None:
    assert stages.is_permanent(error)


@pytest.mark.parametrize(
    "error",
    [
        StoreError("S3 is down"),
        ConnectionResetError("reset by peer"),
        TimeoutError("read timed out"),
        PublishConflict("lost the compare-and-swap"),
        MemoryError(),
        RuntimeError("a worker was lost"),
    ],
)
def test_transient(error: Exception) -> None:
    assert not stages.is_permanent(error)


# Real errors, raised by the real libraries against real (dead or misbehaving) servers.


def test_s3_endpoint_down_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's EndpointConnectionError (nothing listens) and ConnectionClosedError (the
    server hangs up): the store is down, a retry may find it back."""
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    from vsearch.storage.s3 import S3Store

    for name, value in aws_test_credentials().items():
        monkeypatch.setenv(name, value)

    refused = S3Store("b", "vs", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(EndpointConnectionError) as down:
        refused.get("indexes/x/build.json")
    assert not stages.is_permanent(down.value)

    with socket.socket() as listener:  # accepts, then closes without a word
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = listener.accept()
                    conn.recv(65536)
                    conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        closing = S3Store("b", "vs", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
        with pytest.raises(ConnectionClosedError) as closed:
            closing.get("indexes/x/build.json")
    assert not stages.is_permanent(closed.value)


def test_redis_killed_mid_use_is_transient(tmp_path: Path) -> None:
    """The delta log on Redis (what compaction reads) when Redis dies under it."""
    import redis

    from tests.service.redis_proc import KillableRedis

    server = KillableRedis(tmp_path / "redis", appendonly=False)
    server.start()
    try:
        log = open_delta_log(server.url)
        log.append([DeltaWrite("delete", 7)])
        assert [e.item for e in log.read()] == [7]
        server.kill()
        with pytest.raises(redis.exceptions.ConnectionError) as reset:
            log.read()
        assert not stages.is_permanent(reset.value)
        log.close()
    finally:
        server.stop()


_LOAD_CLIP = """
import json, sys
from vsearch.encoders import load_encoder
from vsearch.stages import is_permanent
try:
    load_encoder(sys.argv[1])
except Exception as e:
    print("RESULT" + json.dumps([type(e).__name__, is_permanent(e), str(e)]))
"""


def _load_clip(spec: str, tmp_path: Path, **env: str) -> tuple[str, bool, str]:
    """Load a CLIP encoder in a fresh process: huggingface_hub reads HF_* when imported."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    base.update(HF_HOME=str(tmp_path / "hf"), **env)
    out = subprocess.run([sys.executable, "-c", _LOAD_CLIP, spec], env=base, cwd=ROOT,
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, out.stderr[-3000:]
    name, permanent, message = json.loads(line[len("RESULT") :])
    return name, permanent, message


def test_clip_weights_with_the_hub_unreachable_are_transient(tmp_path: Path) -> None:
    """A hub id not in the cache, online (HF_HUB_OFFLINE unset) and the hub's address
    refusing connections: the download failed on the network, a retry may get it."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused at once
    name, permanent, message = _load_clip(
        "clip:openai/clip-vit-base-patch32", tmp_path, HF_ENDPOINT=endpoint
    )
    assert name == "EncoderUnavailable" and "hub is not reachable" in message
    assert permanent is False


class _HubSaysNoSuchRepo(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _not_found(self) -> None:
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = _not_found


@pytest.mark.parametrize("case", ["repository not found", "offline mode", "bad local path"])
def test_clip_weights_that_are_nowhere_are_permanent(case: str, tmp_path: Path) -> None:
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubSaysNoSuchRepo)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
    try:
        if case == "repository not found":
            result = _load_clip("clip:nobody/no-such-model", tmp_path, HF_ENDPOINT=endpoint)
        elif case == "offline mode":
            result = _load_clip("clip:openai/clip-vit-base-patch32", tmp_path,
                                HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="1")  # fmt: skip
        else:
            result = _load_clip(f"clip:{tmp_path / 'no-such-dir'}", tmp_path)
    finally:
        hub.shutdown()
        hub.server_close()
    assert result[:2] == ("EncoderUnavailable", True), result
