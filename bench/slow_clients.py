"""Slow and idle clients against each candidate HTTP server for the query service, one run.

    .venv/bin/python bench/slow_clients.py [--requests 60] [--out bench/results/slow_clients.md]

Every candidate serves the real app (``service.app:create_app()``, 1 process, 8 request
threads) on 127.0.0.1 over a small published snapshot. A victim sends vector searches,
each on a new connection with a 2 s timeout, one after another: alone first, then while
an attack holds connections open from a background event loop (attackers whose
connection is closed reconnect at once, as a real one would):

    slowloris   64 connections sending their headers one byte every 0.5 s
    slow-body   64 POSTs whose 64 KB body comes one byte every 0.5 s
    idle        2,000 connections that send nothing
    all         the three above together (what tests/service/test_slow_clients.py asserts)
    idle 5000   5,000 silent connections: where waitress's I/O loop starts to cost
    uploads     8 clients each uploading a 36 MP PNG (15.4 MB, under max_request_mb)
                at 4 MB/s, again and again (the row lasts at least 10 s)
    oversize    8 clients sending a 100 MB body at 4 MB/s: must be a 413 before it is read

It reports, per candidate and attack, the victim's answers, p50 and p99, and p99 over
the idle p99. The load generator shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsearch.cli.service_process import free_port, http_json  # noqa: E402

THREADS = 8
VICTIM_TIMEOUT_S = 2.0
UPLOAD_RATE = 4 * 2**20  # bytes/s per uploading client
APP = "service.app:create_app()"


def asgi_app() -> Any:
    """The Flask app behind a2wsgi, for the ASGI candidates (imported by the server)."""
    from a2wsgi import WSGIMiddleware

    from service.app import create_app

    return WSGIMiddleware(create_app(), workers=THREADS)


def candidates(bind: str) -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    host, port = bind.split(":")
    gthread = [str(bin_dir / "gunicorn"), "-b", bind, "-w", "1", "-k", "gthread"]
    return {
        "gunicorn gthread (before)": [
            *gthread, "--threads", str(THREADS), "--keep-alive", "5", "--timeout", "60", APP,
        ],
        "gunicorn gthread tuned": [
            *gthread, "--threads", str(THREADS), "--keep-alive", "1", "--timeout", "10",
            "--worker-connections", "10000", "--limit-request-line", "4094", APP,
        ],
        "gunicorn gthread tuned, 256 threads": [
            *gthread, "--threads", "256", "--keep-alive", "1", "--timeout", "10",
            "--worker-connections", "10000", APP,
        ],
        "waitress (service.server)": [sys.executable, "-m", "service.server"],
        "uvicorn + a2wsgi": [
            str(bin_dir / "uvicorn"), "--factory", "slow_clients:asgi_app", "--host", host,
            "--port", port, "--timeout-keep-alive", "5", "--no-access-log",
        ],
        "gunicorn asgi + a2wsgi": [
            str(bin_dir / "gunicorn"), "-b", bind, "-w", "1", "-k", "asgi",
            "--worker-connections", "10000", "--keep-alive", "5", "slow_clients:asgi_app()",
        ],
    }  # fmt: skip


# --- attackers ------------------------------------------------------------------------------


@dataclass
class Attack:
    """Connections held open against host:port from a background asyncio loop."""

    host: str
    port: int
    slowloris: int = 0
    slow_body: int = 0
    idle: int = 0
    uploads: int = 0
    oversize: int = 0
    upload_body: bytes = b""
    upload_type: str = ""
    opened: int = 0
    closed_by_server: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def size(self) -> int:
        return self.slowloris + self.slow_body + self.idle + self.uploads + self.oversize

    def __enter__(self) -> Attack:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.opened < self.size and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # every slow client has started sending
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._loop.call_soon_threadsafe(self._task.cancel)  # connects and reads in progress
        self._thread.join(10)

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._main())  # which cancels and awaits every attacker at the end

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        slow = b"GET /healthz HTTP/1.1\r\nHost: victim\r\nX-Slow: "
        body = (
            b"POST /v1/search HTTP/1.1\r\nHost: victim\r\nContent-Type: application/json\r\n"
            b"Content-Length: 65536\r\n\r\n"
        )
        jobs = [self._hold(slow, b"a") for _ in range(self.slowloris)]
        jobs += [self._hold(body, b" ") for _ in range(self.slow_body)]
        jobs += [self._hold(b"", b"") for _ in range(self.idle)]
        jobs += [self._upload(len(self.upload_body), self.upload_body) for _ in range(self.uploads)]
        jobs += [self._upload(100 * 2**20, None) for _ in range(self.oversize)]
        await asyncio.gather(*jobs)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.2)

    async def _hold(self, head: bytes, drip: bytes) -> None:
        """Send ``head``, then ``drip`` every 0.5 s, forever; reconnect when closed."""
        first = True
        while not self._stop.is_set():
            reader, writer = await self._connect()
            if first:
                self.opened += 1
                first = False
            try:
                writer.write(head)
                if not drip:  # silent: wait, without waking up, until the server hangs up
                    await reader.read()
                while drip and not self._stop.is_set() and not reader.at_eof():
                    writer.write(drip)
                    await writer.drain()
                    await asyncio.sleep(0.5)
                if reader.at_eof():
                    self.closed_by_server += 1
            except OSError:
                self.closed_by_server += 1
            finally:
                writer.close()

    async def _upload(self, length: int, body: bytes | None) -> None:
        """POST a ``length``-byte body at UPLOAD_RATE, read the answer, again."""
        first = True
        chunk = 64 * 1024
        while not self._stop.is_set():
            reader, writer = await self._connect()
            if first:
                self.opened += 1
                first = False
            kind = self.upload_type if body is not None else "application/octet-stream"
            head = (
                f"POST /v1/search HTTP/1.1\r\nHost: victim\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
            )
            answer = reader._buffer  # type: ignore[attr-defined]  # what arrived so far
            try:
                writer.write(head.encode())
                for start in range(0, length, chunk):
                    if self._stop.is_set() or reader.at_eof() or answer:
                        break  # stopped, or answered before the end (413)
                    part = body[start : start + chunk] if body is not None else b"\0" * chunk
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(len(part) / UPLOAD_RATE)
                line = await asyncio.wait_for(reader.readline(), 30)
            except (TimeoutError, OSError):
                line = bytes(answer)  # a 413 and a close while the body still came: a reset
            finally:
                writer.close()
            words = line[:16].split()
            status = words[1].decode() if len(words) > 1 and b"HTTP/" in words[0] else "none"
            if not self._stop.is_set():
                self.answers[status] = self.answers.get(status, 0) + 1


def multipart_png() -> tuple[bytes, str]:
    """A 6000 x 6000 PNG (36 MP, 15.4 MB) as a multipart/form-data search."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = np.zeros((6000, 6000, 3), np.uint8)
    img[..., 0] = (np.arange(6000) % 256)[None, :]
    img[..., 1] = (np.arange(6000) % 256)[:, None]
    img[..., 2] = rng.integers(0, 2, (6000, 6000), dtype=np.uint8) * 255  # keeps it large
    png = io.BytesIO()
    Image.fromarray(img).save(png, format="PNG", compress_level=1)
    boundary = "vsearchbench"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + png.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


# --- the victim -----------------------------------------------------------------------------


def victim(
    host: str, port: int, bodies: list[bytes], n: int, budget_s: float, min_s: float = 0
) -> list[float]:
    """Latencies (s) of ``n`` searches (more until ``min_s`` has passed, fewer once
    ``budget_s`` has), each on a new connection; NaN for a lost one."""
    out: list[float] = []
    start = time.monotonic()
    for i in itertools.count():
        elapsed = time.monotonic() - start
        if elapsed > budget_s or (i >= n and elapsed >= min_s):
            break
        t = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=VICTIM_TIMEOUT_S)
        try:
            conn.request("POST", "/v1/search", bodies[i % len(bodies)], JSON)
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - t if resp.status == 200 else float("nan"))
        except OSError:  # refused, reset or timed out: not answered
            out.append(float("nan"))
        finally:
            conn.close()
        time.sleep(0.02)
    return out


JSON = {"Content-Type": "application/json"}


@contextlib.contextmanager
def started(cmd: list[str], env: dict[str, str], base: str, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if http_json("GET", f"{base}/readyz", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The uploads rows last at least this long: two whole uploads (3.9 s each) per client,
# with the server parsing them, not only their transfer.
UPLOAD_ROW_S = 10.0

ATTACKS: dict[str, dict[str, int]] = {
    "slowloris 64": {"slowloris": 64},
    "slow-body 64": {"slow_body": 64},
    "idle 2000": {"idle": 2000},
    "all 64+64+2000": {"slowloris": 64, "slow_body": 64, "idle": 2000},
    "idle 5000": {"idle": 5000},
    "uploads 8 x 36 MP PNG": {"uploads": 8},
    "oversize 8 x 100 MB": {"oversize": 8},
}


def pct(lat: list[float], p: float) -> float:
    ok = [x for x in lat if x == x]
    return float(np.percentile(np.asarray(ok) * 1000, p)) if ok else float("nan")


def num(x: float, unit: str = "") -> str:
    return "-" if x != x else f"{x:.1f}{unit}"


def bench(names: list[str], n: int, out_lines: list[str]) -> None:
    from tests.fixtures.snapshots import publish_series, sample_vectors
    from vsearch.storage import LocalStore

    root = Path(tempfile.mkdtemp(prefix="slow-clients-"))
    try:
        store = LocalStore(root / "store")
        publish_series(store, [1], n=2000)
        xq = sample_vectors(64, 64, seed=7)
        bodies = [json.dumps({"vector": x.tolist(), "k": 10}).encode() for x in xq]
        upload, upload_type = multipart_png()
        out_lines += [
            "| server | attack | victim answered | p50 ms | p99 ms | p99 / idle p99 | attackers |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in names:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "VSEARCH_STORE": str(store.root),
                "VSEARCH_DATA_DIR": str(root / "data"),
                "VSEARCH_WATCH_INTERVAL_S": "0",
                "VSEARCH_SERVICE_BIND": f"127.0.0.1:{port}",
                "VSEARCH_SERVICE_THREADS": str(THREADS),
                "VSEARCH_SERVICE_WORKERS": "1",
                "VSEARCH_SERVICE_ACCESS_LOG": "",
                "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT}",
            }
            cmd = candidates(f"127.0.0.1:{port}")[name]
            log = root / f"{name.split()[0]}-{port}.log"
            with started(cmd, env, base, log):
                victim("127.0.0.1", port, bodies, 10, 30)  # warm-up
                idle = victim("127.0.0.1", port, bodies, n, 60)
                rows = [("none", idle, "")]
                for attack_name, sizes in ATTACKS.items():
                    attack = Attack("127.0.0.1", port, **sizes)
                    attack.upload_body, attack.upload_type = upload, upload_type
                    min_s = UPLOAD_ROW_S if attack.uploads else 0
                    with attack:
                        lat = victim("127.0.0.1", port, bodies, n, 20, min_s)
                    notes = [f"{attack.closed_by_server} closed by the server"]
                    notes += [f"{v} answered {k}" for k, v in sorted(attack.answers.items())]
                    note = ", ".join(notes[0 if attack.closed_by_server else 1 :])
                    rows.append((attack_name, lat, note))
                    print(name, attack_name, len(lat), num(pct(lat, 50)), num(pct(lat, 99)), note)
                    time.sleep(1.0)
            for attack_name, lat, note in rows:
                answered = sum(1 for x in lat if x == x)
                ratio = pct(lat, 99) / pct(idle, 99)
                out_lines.append(
                    f"| {name} | {attack_name} | {answered}/{len(lat)} | {num(pct(lat, 50))} | "
                    f"{num(pct(lat, 99))} | {num(ratio, 'x')} | {note} |"
                )
            print("\n".join(out_lines[-len(rows) :]), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60, help="victim requests per row")
    parser.add_argument("--server", action="append", help="candidate names (default: all)")
    parser.add_argument("--out", type=Path, help="append the table to this file")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    names = args.server or list(candidates("127.0.0.1:0"))
    lines: list[str] = []
    bench(names, args.requests, lines)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
