"""A redis-server the test can SIGKILL and restart on the same port and files.

tests/servers.redis_server stops Redis politely (SIGTERM, which flushes the AOF);
a durability test needs the impolite kind of stop.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from tests.servers import free_port, wait_for_port


class KillableRedis:
    def __init__(self, workdir: Path, *, appendonly: bool, appendfsync: str = "always") -> None:
        self.workdir, self.port = workdir, free_port()
        self.appendonly, self.appendfsync = appendonly, appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [
            exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync, "--protected-mode", "no",
        ]  # fmt: skip
        with open(self.workdir / "redis.log", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no final fsync."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
