"""Query-service benchmarks: the service over HTTP against raw in-process faiss, same run.

    .venv/bin/python bench/service_bench.py latency   # p50/p99/QPS at concurrency 1 and 8
    .venv/bin/python bench/service_bench.py delta     # upsert-to-visible, one replica and two
    .venv/bin/python bench/service_bench.py swap      # latency while CURRENT moves
    .venv/bin/python bench/service_bench.py all --out bench/results/service.md

The service runs under its real server (service/server.py, waitress) on 127.0.0.1; the load
generator runs on the same machine (it competes for the same cores, which
penalises the service, not the baseline). The baseline searches the very shard
files the service loaded, in this process, with the same k and nprobe.
Every load loop is bounded in requests and seconds.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from vsearch.cli.service_process import free_port, http_json, running_service
from vsearch.storage import LocalStore

D, K = 64, 10


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: list[str]) -> list[str]:
    return [row(*header), row(*["---"] * len(header))]


def ms(xs: list[float], p: float) -> str:
    return f"{pct(xs, p):.2f}"


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, p)) if xs else float("nan")


def run_load(
    call: Callable[[int, int], None], concurrency: int, requests: int, seconds: float
) -> tuple[list[float], float, int]:
    """(latencies s, QPS, errors) of ``call(worker, i)`` from ``concurrency`` threads."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per = requests // concurrency
    deadline = time.monotonic() + seconds

    def worker(w: int) -> None:
        mine = []
        for i in range(per):
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            try:
                call(w, i)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, len(lat) / (time.perf_counter() - t0), errors[0]


class Client:
    """One keep-alive HTTP connection per load thread."""

    def __init__(self, base: str, concurrency: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conns = [
            http.client.HTTPConnection(host, int(port), timeout=30) for _ in range(concurrency)
        ]

    def post(self, w: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        conn = self.conns[w]
        conn.request(
            "POST" if path != "/v1/items" else "PUT",
            path,
            body,
            {"Content-Type": "application/json", **(headers or {})},
        )
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)


def b64(x: np.ndarray) -> str:
    return base64.b64encode(x.astype("<f4").tobytes()).decode()


def make_store(
    root: Path, n: int, factory: str, days: tuple[int, ...] = (1,)
) -> tuple[LocalStore, list[Any]]:
    store = LocalStore(root / "store")
    ms = []
    for day in days:
        ids = np.arange(n, dtype="int64") + day * 10_000_000
        ms.append(
            build_snapshot(
                store,
                snapshot_id(day),
                sample_vectors(n, D, seed=day),
                ids,
                factory=factory,
                nshards=2,
            )
        )
    publish(store, ms[0])
    return store, ms


def service_env(root: Path, store: LocalStore, **extra: str) -> dict[str, str]:
    env = {
        "VSEARCH_STORE": str(store.root),
        "VSEARCH_DATA_DIR": str(root / "data"),
        "VSEARCH_WATCH_INTERVAL_S": "0.5",
        "VSEARCH_SERVICE_THREADS": "16",
    }
    env.update({f"VSEARCH_{k.upper()}": v for k, v in extra.items()})
    return env


def raw_searcher(root: Path, manifest: Any, nprobe: int | None) -> Callable[[np.ndarray], None]:
    """In-process faiss over the same shard files with the same fan-out: shards in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    import faiss

    from vsearch.index.structure import search_params

    cache = root / "data" / "cache" / "shards"
    shards = [faiss.read_index(str(cache / f"{s.sha256}.index")) for s in manifest.shards]
    params = search_params(shards[0], nprobe)  # the service's own (same spec in every shard)
    # Like the service's shard workers: one OpenMP thread per call (the setting is per thread).
    pool = ThreadPoolExecutor(len(shards) * 8, initializer=faiss.omp_set_num_threads, initargs=(1,))

    def one(shard: Any, x: np.ndarray) -> Any:
        return shard.search(x[None], K, params=params) if params else shard.search(x[None], K)

    def search(x: np.ndarray) -> None:
        faiss.omp_set_num_threads(1)
        futures = [pool.submit(one, s, x) for s in shards[1:]]
        results = [one(shards[0], x)] + [f.result() for f in futures]
        dist = np.concatenate([d[0] for d, _ in results])
        np.argsort(-dist)[:K]

    return search


def interleaved(
    service: Callable[[int, int], None],
    raw: Callable[[int, int], None],
    c: int,
    requests: int,
    rounds: int = 5,
) -> tuple[list[float], float, list[float], float, int]:
    """Alternate service and raw in rounds so that both see the same background load."""
    lat_s: list[float] = []
    lat_r: list[float] = []
    time_s = time_r = 0.0
    errors = 0
    for _ in range(rounds):
        t = time.perf_counter()
        lat, _, err = run_load(service, c, requests // rounds, 30)
        time_s += time.perf_counter() - t
        lat_s += lat
        errors += err
        t = time.perf_counter()
        lat, _, _ = run_load(raw, c, requests // rounds, 30)
        time_r += time.perf_counter() - t
        lat_r += lat
    return lat_r, len(lat_r) / time_r, lat_s, len(lat_s) / time_s, errors


def bench_latency(
    root: Path, out: list[str], n: int, factory: str, nprobe: int | None, requests: int
) -> None:
    store, (m,) = make_store(root, n, factory)
    xq = sample_vectors(512, D, seed=99)
    bodies = [
        json.dumps({"vector": b64(x), "k": K, **({"nprobe": nprobe} if nprobe else {})}).encode()
        for x in xq
    ]
    rows = []
    floor = http_floor(root, bodies, requests)
    for batch in ("32", "1"):
        env = service_env(root, store, max_batch=batch, shard_threads="2")
        with running_service(env, log_path=root / "server.log") as base:
            raw = raw_searcher(root, m, nprobe)
            for c in (1, 8):
                client = Client(base, c)

                def service(w: int, i: int) -> None:
                    client.post(w, "/v1/search", bodies[(w * 97 + i) % len(bodies)])  # noqa: B023

                def baseline(w: int, i: int) -> None:
                    raw(xq[(w * 97 + i) % len(xq)])  # noqa: B023

                run_load(service, c, 40, 10)  # warm-up
                lat_r, qps_r, lat_s, qps_s, err = interleaved(service, baseline, c, requests)
                rows.append((batch, c, lat_r, qps_r, lat_s, qps_s, err))
    title = f"{factory}, {n} vectors of dim {D}, 2 shards, k={K}, nprobe={nprobe}"
    out.append(f"\n### Search latency: {title}\n")
    raw_cols = ["raw p50 ms", "raw p99 ms", "raw QPS"]
    service_cols = ["service p50 ms", "service p99 ms", "service QPS"]
    ratios = ["p50 ratio", "QPS ratio", "errors", "floor p50 ms", "service - floor p50 ms"]
    out += table(["max_batch", "concurrency", *raw_cols, *service_cols, *ratios])
    for batch, c, lat_r, qps_r, lat_s, qps_s, err in rows:
        p50_ratio = pct(lat_s, 50) / pct(lat_r, 50)
        out.append(
            row(
                batch, c, ms(lat_r, 50), ms(lat_r, 99), f"{qps_r:.0f}", ms(lat_s, 50), ms(lat_s, 99)
            )[:-1]
            + row(f"{qps_s:.0f}", f"{p50_ratio:.2f}x", f"{qps_s / qps_r:.2f}x", err)[:-1]
            + row(ms(floor[c], 50), f"{pct(lat_s, 50) - pct(floor[c], 50):.2f}")
        )
    out.append(
        "\nfloor: the same server settings and client, serving bench/floor_app.py (a Flask "
        "view that parses the body and answers no hits). service - floor is what searching "
        "costs inside the service: compare it with raw p50."
    )


def http_floor(root: Path, bodies: list[bytes], requests: int) -> dict[int, list[float]]:
    """Latencies of the HTTP floor app at concurrency 1 and 8."""
    env = {
        "VSEARCH_DATA_DIR": str(root / "floor"),
        "VSEARCH_SERVICE_THREADS": "16",
        "PYTHONPATH": str(Path(__file__).parent),
    }
    floor = {}
    with running_service(env, log_path=root / "floor.log", app="floor_app:app") as base:
        for c in (1, 8):
            client = Client(base, c)

            def call(w: int, i: int) -> None:
                client.post(w, "/v1/search", bodies[(w * 97 + i) % len(bodies)])  # noqa: B023

            run_load(call, c, 40, 10)  # warm-up
            floor[c] = run_load(call, c, requests, 30)[0]
    return floor


def start_redis(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    (root / "redis").mkdir()
    cmd = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(root / "redis"),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def bench_delta(root: Path, out: list[str], writes: int) -> None:
    from vsearch.delta import DeltaWrite, open_delta_log
    from vsearch.search import DeltaIndex

    store, _ = make_store(root, 20_000, "IDMap2,Flat")
    redis_proc, url = start_redis(root)
    key = {"X-API-Key": "bench"}
    try:
        common = {"delta_log": url, "metadata_db": url, "api_key": "bench"}
        env_a = service_env(root / "a", store, **common)
        env_b = service_env(root / "b", store, **common)
        with (
            running_service(env_a, log_path=root / "a.log") as a,
            running_service(env_b, log_path=root / "b.log") as b,
        ):
            ca, cb = Client(a, 1), Client(b, 1)
            local, remote = [], []
            for i in range(writes):
                x = sample_vectors(1, D, seed=50_000 + i)[0]
                item = 90_000_000 + i
                put = json.dumps({"items": [{"id": item, "vector": b64(x)}]}).encode()
                query = json.dumps({"vector": b64(x), "k": 1}).encode()
                t = time.perf_counter()
                ca.post(0, "/v1/items", put, key)
                hit = ca.post(0, "/v1/search", query)["hits"][0]
                local.append(time.perf_counter() - t)
                assert hit["id"] == item and hit["source"] == "delta", hit
                while cb.post(0, "/v1/search", query)["hits"][0]["id"] != item:
                    if time.perf_counter() - t > 5:
                        raise RuntimeError("replica b never saw the write")
                remote.append(time.perf_counter() - t)
        # Baseline: the same work in-process — XADD to the same Redis, apply, exact delta search.
        log, index, raw = open_delta_log(url), DeltaIndex(D, "ip"), []
        for i in range(writes):
            x = sample_vectors(1, D, seed=60_000 + i)[0]
            t = time.perf_counter()
            index.apply(log.append([DeltaWrite("upsert", 80_000_000 + i, x)]))
            index.search(x[None], 1, (0, 0))
            raw.append(time.perf_counter() - t)
        log.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    out.append(f"\n### Upsert-to-visible (Redis stream, appendfsync always), {writes} writes\n")
    out += table(["path", "p50 ms", "p99 ms", "max ms", "p99 ratio to raw"])
    for name, lat in (
        ("raw in-process: XADD + apply + exact delta search", raw),
        ("same replica: PUT, then the next search finds it", local),
        ("second replica (tails the stream), polled by search", remote),
    ):
        ratio = pct(lat, 99) / pct(raw, 99)
        out.append(row(name, ms(lat, 50), ms(lat, 99), f"{max(lat) * 1000:.2f}", f"{ratio:.2f}x"))


def bench_swap(root: Path, out: list[str], n: int, seconds: float, concurrency: int) -> None:
    """Steady load for ``seconds``, then the same load while CURRENT moves 4 times."""
    days = (1, 2, 3, 4)
    store, snaps = make_store(root, n, "IDMap2,Flat", days)
    xq = sample_vectors(256, D, seed=7)
    bodies = [json.dumps({"vector": b64(x), "k": K}).encode() for x in xq]
    env = service_env(root, store, watch_interval_s="0.2")
    with running_service(env, log_path=root / "swap.log") as base:
        client = Client(base, concurrency)
        search = lambda w, i: client.post(w, "/v1/search", bodies[(w * 31 + i) % len(bodies)])  # noqa: E731
        run_load(search, concurrency, 40, 10)
        steady, qps_steady, err_steady = run_load(search, concurrency, 100_000, seconds)
        stop = threading.Event()

        def mover() -> None:
            """Move CURRENT through the other snapshots, each once it is live, then back."""
            for k in (1, 2, 3, 0):
                if stop.wait(1.0):
                    return
                publish(store, snaps[k])
                deadline = time.monotonic() + 60
                while http_json("GET", f"{base}/readyz")[1]["snapshot_id"] != snaps[k].snapshot_id:
                    if stop.wait(0.05) or time.monotonic() > deadline:
                        return
            stop.wait(1.0)
            stop.set()

        t = threading.Thread(target=mover)
        t.start()
        during: list[float] = []
        err_during, started = 0, time.perf_counter()
        while not stop.is_set() and time.perf_counter() - started < 120:
            lat, _, err = run_load(search, concurrency, 40 * concurrency, 10)
            during += lat
            err_during += err
        qps_during = len(during) / (time.perf_counter() - started)
        stop.set()
        t.join()
        seen = http_json("GET", f"{base}/readyz")[1]["swaps"]
    out.append(
        f"\n### Latency during swaps: {n} vectors x 4 snapshots, concurrency {concurrency}\n"
    )
    out += table(["phase", "requests", "p50 ms", "p99 ms", "QPS", "errors", "swaps done"])
    out.append(
        row(
            "steady",
            len(steady),
            ms(steady, 50),
            ms(steady, 99),
            f"{qps_steady:.0f}",
            err_steady,
            "-",
        )
    )
    out.append(
        row("CURRENT moving", len(during), ms(during, 50), ms(during, 99), f"{qps_during:.0f}")[:-1]
        + row(err_during, seen - 1)
    )
    ratio = pct(during, 99) / pct(steady, 99)
    out.append(
        f"\np99 during swaps / steady p99: **{ratio:.2f}x** (goal <= 2x), errors: {err_during}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["latency", "delta", "swap", "all"])
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--requests", type=int, default=800)
    args = parser.parse_args()
    out = [f"Run: `{' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.what in ("latency", "all"):
            bench_latency(root / "flat", out, 200_000, "IDMap2,Flat", None, args.requests)
            bench_latency(root / "ivf", out, 100_000, "OPQ8,IVF256,PQ8", 16, args.requests)
        if args.what in ("delta", "all"):
            bench_delta(root / "delta", out, 200)
        if args.what in ("swap", "all"):
            bench_swap(root / "swap", out, 100_000, 10.0, 4)
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
