"""Real servers for the tests, each a child process on a free loopback port.

No in-process fakes: moto runs as its HTTP server (the same boto3 code path as
MinIO and AWS) and Redis is a real ``redis-server``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.args!r} did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def _process(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_server(workdir: Path, port: int | None = None) -> Iterator[str]:
    """An S3 endpoint URL served by moto's server mode (on ``port``, else a free one)."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    with _process([*cmd, "-H", "127.0.0.1", "-p", str(port)], port, workdir / "moto.log"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def redis_server(workdir: Path, *, appendonly: bool = False) -> Iterator[tuple[str, int]]:
    """(host, port) of a fresh redis-server whose files live in ``workdir``."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--protected-mode",
        "no",
    ]
    with _process(cmd, port, workdir / "redis.log"):
        yield "127.0.0.1", port


def aws_test_credentials() -> dict[str, str]:
    """Dummy credentials for moto; set so boto3 never looks beyond the environment."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def apply_env(values: dict[str, str]) -> None:
    os.environ.update(values)
