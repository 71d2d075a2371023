"""Query-service benchmark: vsearch vs raw faiss on the same files vs clip-retrieval's back.

    .venv/bin/python bench/query_bench.py vectors --out bench/results/query.md
    .venv/bin/python bench/query_bench.py images --out bench/results/query_images.md

``vectors``, per dataset (real CNN features: EfficientNet-Lite0 embeddings of CIFAR-10,
cached under ~/.cache/vsearch-bench; and clustered 512-d vectors):

1. ``vsearch index`` builds a snapshot of the base vectors on defaults, except
   ``--memory-floor-mb 0`` (otherwise collections this small get an exact index).
2. Three systems answer the held-out queries at concurrency 1, 8 and 32, in
   interleaved rounds (each round runs every system once, so all see the same load):
   the service (``python -m service.server``, JSON vector queries over loopback), raw
   faiss in this process on the very shard files the service cached (mapped as the
   service maps them, same nprobe, same search parameters, one thread per concurrent
   client), and clip-retrieval's back (bench/peer/, its own venv) serving the same
   index file without the IDMap layer (it cannot search through one) at the same
   nprobe, with its default parquet metadata.
3. recall@10 of every system's answers against exact search; a recall-vs-ms sweep
   over nprobe for the service and raw faiss; the service workers' memory
   (RssAnon, RssFile and PSS above an empty service's, per vector) with 1 and 2
   workers next to the index report's resident bytes per vector.

``images``: image queries per second at concurrency 1, 8 and 16 with query batching
on and off, for EfficientNet-Lite0 (real weights) and a CLIP ViT-B/32-shaped model
with random weights (its speed is CLIP's; its answers mean nothing).

The load generator is this process (Python threads, keep-alive connections): it
competes with the servers for the same cores, alike for every HTTP system.
"""

# ruff: noqa: E501, B023 -- table rows kept one per line; each lambda runs inside its loop turn
from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# OpenMP threads of this process sleep between calls instead of spinning on the cores
# the servers need (the exact ground truth uses them).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.index_bench import load_cifar, load_synthetic, machine  # noqa: E402
from vsearch.catalog import read_current  # noqa: E402
from vsearch.cli.service_process import free_port, running_service  # noqa: E402
from vsearch.storage import LocalStore  # noqa: E402

K = 10
SERVICE, SERVICE_2W, RAW = "vsearch (1 worker x 8 threads)", "vsearch (2 workers x 8)", "raw faiss"
PEER, FLOOR = "clip back", "HTTP floor (no search)"
SERVICE_MB = "vsearch (1 x 8, shard MAX_BATCH=32)"
PEER_PY = ROOT / ".bench-venvs" / "clip-retrieval" / "bin" / "python"
SHARED_DATA = ROOT.parent / "shared" / "data"


# -- load -------------------------------------------------------------------------


def run_load(
    call: Callable[[int, int], Any], concurrency: int, seconds: float, nq: int
) -> tuple[list[float], float, int, dict[int, Any]]:
    """(latencies s, QPS, errors, answers by query row) of ``call(worker, row)``."""
    lat: list[float] = []
    answers: dict[int, Any] = {}
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(w: int) -> None:
        mine, got, i = [], {}, w
        while time.monotonic() < deadline:
            row = i % nq
            t = time.perf_counter()
            try:
                got[row] = call(w, row)
            except Exception:
                with lock:
                    errors[0] += 1
            else:
                mine.append(time.perf_counter() - t)
            i += concurrency
        with lock:
            lat.extend(mine)
            answers.update(got)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, len(lat) / (time.perf_counter() - t0), errors[0], answers


class Http:
    """One keep-alive connection per load thread."""

    def __init__(self, base: str, concurrency: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conns = [
            http.client.HTTPConnection(host, int(port), timeout=60) for _ in range(concurrency)
        ]

    def post(self, w: int, path: str, body: bytes, content_type: str = "application/json") -> Any:
        conn = self.conns[w]
        conn.request("POST", path, body, {"Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        for c in self.conns:
            c.close()


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, p)) if xs else float("nan")


def recall_at_10(answers: dict[int, list[int] | None], truth: np.ndarray) -> float:
    answers = {row: ids for row, ids in answers.items() if ids is not None}
    if not answers:
        return float("nan")
    hits = sum(len(set(ids[:K]) & set(truth[row, :K].tolist())) for row, ids in answers.items())
    return hits / (K * len(answers))


# -- building and serving -----------------------------------------------------------


def build(
    root: Path, xb: np.ndarray, factory: str | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """``vsearch index`` on the vectors; the service env and the snapshot's report."""
    vectors = root / "vectors"
    vectors.mkdir(parents=True)
    np.save(vectors / "part-0000.npy", xb)
    np.save(vectors / "part-0000.ids.npy", np.arange(len(xb), dtype="int64"))  # ids = rows
    env = {
        "VSEARCH_DATA_DIR": str(root / "data"),
        "VSEARCH_STORE": str(root / "store"),
        "OMP_NUM_THREADS": "2",
    }
    cmd = [str(ROOT / ".venv" / "bin" / "vsearch"), "index", str(vectors), "--memory-floor-mb", "0"]
    cmd += ["--factory", factory, "--target-recall", "0"] if factory else []
    subprocess.run(cmd, env={**os.environ, **env}, check=True, capture_output=True)
    reports = list((root / "store" / "indexes").glob("*/report.json"))
    return env, json.loads(reports[0].read_text())


def service_env(env: dict[str, str], workers: int, threads: int, batch: int = 1) -> dict[str, str]:
    return {
        **env,
        "VSEARCH_SERVICE_WORKERS": str(workers),
        "VSEARCH_SERVICE_THREADS": str(threads),
        "VSEARCH_WATCH_INTERVAL_S": "0",
        "VSEARCH_QUERY_BATCH_MAX": str(batch),
        "OMP_NUM_THREADS": "1",
    }


def worker_pids(base: str) -> list[int]:
    """Pids of the server processes listening on ``base``'s port (the master and workers)."""
    port = int(base.rsplit(":", 1)[1])
    out = subprocess.run(
        ["ss", "-tlnpH", f"sport = :{port}"], capture_output=True, text=True
    ).stdout
    return sorted({int(p.split(",")[0]) for p in out.split("pid=")[1:]})


def memory_of(pids: list[int]) -> dict[str, int]:
    total = {"rss_anon": 0, "rss_file": 0, "pss": 0}
    keys = {"RssAnon:": "rss_anon", "RssFile:": "rss_file", "Pss:": "pss"}
    for pid in pids:
        for name in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
            for line in Path(name).read_text().splitlines():
                f = line.split()
                if f and f[0] in keys:
                    total[keys[f[0]]] += int(f[1]) * 1024
    return total


@contextmanager
def clip_back(index_file: Path, dim: int, nprobe: int | None) -> Iterator[str | None]:
    """clip-retrieval's back serving ``index_file`` (IDMap stripped); None if not set up."""
    if not PEER_PY.exists():
        subprocess.run(
            ["bash", str(ROOT / "bench" / "peer" / "setup_clip_retrieval.sh")], check=True
        )
    port = free_port()
    cmd = [str(PEER_PY), str(ROOT / "bench" / "peer" / "clip_back_serve.py"), str(index_file),
           str(dim), str(port), "--metric", "ip", "--strip-idmap", "--omp-threads", "1",
           "--no-access-log"] + (["--nprobe", str(nprobe)] if nprobe else [])  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/indices-list")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("clip back did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


# -- the vector benchmark -------------------------------------------------------------


def raw_searcher(index_file: Path, nprobe: int | None) -> Callable[[np.ndarray], list[int]]:
    import faiss

    from vsearch.index.structure import search_params

    index = faiss.read_index(str(index_file), faiss.IO_FLAG_MMAP_IFC)
    params = search_params(index, nprobe) if nprobe else None
    one_thread = threading.local()

    def search(x: np.ndarray) -> list[int]:
        if not getattr(one_thread, "set", False):  # per calling thread, as the service does
            faiss.omp_set_num_threads(1)
            one_thread.set = True
        if params is None:
            _, ids = index.search(x[None, :], K)
        else:
            _, ids = index.search(x[None, :], K, params=params)
        return [int(i) for i in ids[0]]

    return search


def vector_dataset(
    name: str, xb: np.ndarray, xq: np.ndarray, rounds: int, seconds: float, out: list[str]
) -> dict[str, Any]:
    import faiss

    _, truth = faiss.knn(xq, xb, K, metric=faiss.METRIC_INNER_PRODUCT)  # ids are row numbers
    root = Path(tempfile.mkdtemp(prefix=f"query-bench-{name}-"))
    env, report = build(root, xb)
    manifest = read_current(LocalStore(root / "store"))
    assert manifest is not None
    factory, nprobe = manifest.index.factory, manifest.index.default_nprobe
    bodies = [json.dumps({"vector": x.tolist(), "k": K}).encode() for x in xq]
    peer_bodies = [json.dumps({"embedding_input": x.tolist(), "modality": "image", "num_images": K,
                               "indice_name": "peer", "deduplicate": False, "use_safety_model": False,
                               "use_violence_detector": False, "use_mclip": False,
                               "aesthetic_score": "", "aesthetic_weight": ""}).encode()
                   for x in xq]  # fmt: skip
    results: dict[tuple[str, int], list[tuple[list[float], float, int, float]]] = {}
    levels = (1, 8, 32)
    with (
        running_service(service_env(env, 1, 8)) as base,
        running_service(service_env(env, 2, 8)) as base2,
        running_service({**service_env(env, 1, 8), "VSEARCH_MAX_BATCH": "32"}) as batched,
        running_service(service_env(env, 1, 8), app="bench.floor_app:app") as floor,
    ):
        shard = next((root / "data" / "cache" / "shards").glob("*.index"))
        raw = raw_searcher(shard, nprobe)
        with clip_back(shard, xb.shape[1], nprobe) as peer:
            http_systems: dict[str, tuple[str, str, list[bytes], Callable[[Any], Any]]] = {
                SERVICE: (base, "/v1/search", bodies, lambda a: [h["id"] for h in a["hits"]]),
                SERVICE_2W: (base2, "/v1/search", bodies, lambda a: [h["id"] for h in a["hits"]]),
                SERVICE_MB: (batched, "/v1/search", bodies, lambda a: [h["id"] for h in a["hits"]]),
                PEER: (peer, "/knn-service", peer_bodies, lambda a: [h["ext_id"] for h in a]),
                FLOOR: (floor, "/v1/search", bodies, lambda a: None),
            }
            for _ in range(rounds):
                for c in levels:
                    lat, qps, err, ans = run_load(lambda w, r: raw(xq[r]), c, seconds, len(xq))
                    results.setdefault((RAW, c), []).append(
                        (lat, qps, err, recall_at_10(ans, truth))
                    )
                    for system, (url, path, payloads, hits) in http_systems.items():
                        client = Http(url, c)
                        lat, qps, err, ans = run_load(
                            lambda w, r: hits(client.post(w, path, payloads[r])),
                            c,
                            seconds,
                            len(xq),
                        )
                        client.close()
                        results.setdefault((system, c), []).append(
                            (lat, qps, err, recall_at_10(ans, truth))
                        )
        sweep = nprobe_sweep(base, raw_searcher, shard, xq, truth, manifest.index.nlist)
    raw = unmapped  # this process must not map the shard while the workers' shares are measured
    gc.collect()
    memory = memory_table(root, env, xb, factory, report)
    out += [f"## {name}: {xb.shape[0]:,} x {xb.shape[1]}, {len(xq):,} held-out queries", "",
            f"Spec chosen by `vsearch index` (defaults, memory floor 0): `{factory}`, default nprobe {nprobe}.",
            "", "| system | concurrency | QPS (median of rounds) | p50 ms | p99 ms | errors | recall@10 | QPS vs raw | p50 - raw p50 ms |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    summary: dict[str, Any] = {"levels": levels, "qps": {}}
    for c in levels:
        raw_qps = float(np.median([r[1] for r in results[(RAW, c)]]))
        raw_p50 = float(np.median([pct(r[0], 50) for r in results[(RAW, c)]]))
        for system in (SERVICE, SERVICE_2W, SERVICE_MB, RAW, PEER, FLOOR):
            runs = results.get((system, c))
            if not runs:
                continue
            qps = float(np.median([r[1] for r in runs]))
            p50 = float(np.median([pct(r[0], 50) for r in runs]))
            p99 = float(np.median([pct(r[0], 99) for r in runs]))
            summary["qps"].setdefault(system, []).append(qps)
            out.append(f"| {system} | {c} | {qps:,.0f} | {p50:.2f} | {p99:.2f} | {sum(r[2] for r in runs)} | "
                       f"{np.mean([r[3] for r in runs]):.3f} | {qps / raw_qps:.2f}x | {p50 - raw_p50:+.2f} |")  # fmt: skip
    out += ["", *memory, ""]
    summary["sweep"], summary["name"] = sweep, name
    return summary


def unmapped(x: np.ndarray) -> list[int]:
    raise RuntimeError("the raw index was released")


def nprobe_sweep(
    base: str,
    make_raw: Callable[[Path, int | None], Callable[[np.ndarray], list[int]]],
    shard: Path,
    xq: np.ndarray,
    truth: np.ndarray,
    nlist: int | None,
) -> dict[str, list[tuple[float, float]]]:
    """(ms/query at c=1, recall@10) per nprobe, for the service and raw faiss."""
    if not nlist:
        return {}
    points: dict[str, list[tuple[float, float]]] = {"vsearch": [], "raw faiss": []}
    nq = min(len(xq), 300)
    for nprobe in [p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p <= nlist]:
        client = Http(base, 1)
        body = [
            json.dumps({"vector": x.tolist(), "k": K, "nprobe": nprobe}).encode() for x in xq[:nq]
        ]
        lat, _, _, ans = run_load(lambda w, r: [h["id"] for h in client.post(w, "/v1/search", body[r])["hits"]], 1, 1.5, nq)  # fmt: skip
        client.close()
        points["vsearch"].append((pct(lat, 50), recall_at_10(ans, truth)))
        raw = make_raw(shard, nprobe)
        lat, _, _, ans = run_load(lambda w, r: raw(xq[r]), 1, 1.5, nq)
        points["raw faiss"].append((pct(lat, 50), recall_at_10(ans, truth)))
    return points


def memory_table(
    root: Path, env: dict[str, str], xb: np.ndarray, factory: str, report: dict[str, Any]
) -> list[str]:
    """What a serving worker holds per vector: memory with the snapshot minus memory with
    a small snapshot of the same spec (libraries, Python, fixed costs alike), over the
    difference in vectors; with 1 and 2 workers."""
    nlist = read_nlist(factory)
    small_n = min(len(xb) // 4, max(len(xb) // 10, 40 * nlist))
    small_env, _ = build(root / "small", xb[:small_n], factory=factory)
    reported = report["sizes"]["resident_bytes_per_vector"]
    shard_bytes = report["sizes"]["total_bytes"]
    lines = ["| workers | RssAnon B/vector | RssFile B/vector | PSS B/vector (all workers) | index report resident B/vector | RssAnon / report |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    pss = {}
    for workers in (1, 2):
        found = []
        for e in (small_env, env):
            with running_service(service_env(e, workers, 8)) as base:
                time.sleep(3)  # every worker has loaded the snapshot
                found.append(memory_of(worker_pids(base)))
        per = {k: (found[1][k] - found[0][k]) / (len(xb) - small_n) for k in found[0]}
        pss[workers] = per["pss"] * len(xb)
        lines.append(f"| {workers} | {per['rss_anon']:.1f} | {per['rss_file']:.1f} | {per['pss']:.1f} | "
                     f"{reported} | {per['rss_anon'] / reported:.2f}x |")  # fmt: skip
    lines += ["", f"Per vector: (memory serving {len(xb):,} vectors - memory serving {small_n:,} with "
              f"the same spec) / {len(xb) - small_n:,}, summed over the worker processes, measured "
              "once each has loaded. RssAnon: private memory; RssFile: mapped pages it has "
              "touched (page cache, shared by every worker); PSS: the workers' proportional "
              "share of both.",
              f"A second worker adds {100 * (pss[2] - pss[1]) / shard_bytes:.1f}% of the shard bytes "
              f"({shard_bytes / 2**20:.1f} MiB) in PSS."]  # fmt: skip
    return lines


def read_nlist(factory: str) -> int:
    import re

    found = re.search(r"IVF(\d+)", factory)
    return int(found.group(1)) if found else 1


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(summaries), figsize=(6 * len(summaries), 9), squeeze=False)
    for col, s in enumerate(summaries):
        ax = axes[0][col]
        for system, qps in s["qps"].items():
            ax.plot(s["levels"], qps, marker="o", label=system)
        ax.set(xscale="log", xlabel="concurrency", ylabel="QPS", title=f"{s['name']}: QPS")
        ax.set_xticks(s["levels"], [str(c) for c in s["levels"]])
        ax.legend()
        ax = axes[1][col]
        for system, pts in s["sweep"].items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
        ax.set(xlabel="p50 ms/query (c=1, over HTTP for vsearch)", ylabel="recall@10",
               title=f"{s['name']}: recall vs latency (nprobe sweep)")  # fmt: skip
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def run_vectors(args: argparse.Namespace) -> None:
    started = time.time()
    out = ["# Query service vs raw faiss vs clip-retrieval back: vector queries", "",
           f"Command: `.venv/bin/python bench/query_bench.py {' '.join(sys.argv[1:])}`  ",
           f"Machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
           f"{args.rounds} interleaved rounds of {args.seconds:g} s per system and concurrency.", ""]  # fmt: skip
    summaries = []
    cache = Path.home() / ".cache" / "vsearch-bench" / "cifar"
    xb, xq = load_cifar(args.nq, SHARED_DATA, cache, train=args.cifar_train)
    summaries.append(
        vector_dataset(
            "CIFAR-10 EfficientNet-Lite0 features", xb, xq, args.rounds, args.seconds, out
        )
    )
    xb, xq = load_synthetic(args.clustered_n, args.nq, d=512)
    summaries.append(vector_dataset("clustered 512-d", xb, xq, args.rounds, args.seconds, out))
    png = Path(args.out).with_suffix(".png")
    plot(summaries, png)
    out += [f"![QPS and recall vs latency]({png.name})", "",
            f"Load average at the end: {os.getloadavg()[0]:.1f}; {time.time() - started:.0f} s in all."]  # fmt: skip
    Path(args.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


# -- the image benchmark --------------------------------------------------------------


def run_images(args: argparse.Namespace) -> None:
    from bench.embed_throughput import save_random_clip_b32
    from tests.fixtures.snapshots import build_snapshot, publish, snapshot_id
    from vsearch.encoders import load_encoder

    started = time.time()
    photos = coco_photos(64)
    modes = (1, 4, 32)
    out = ["# Image queries: dynamic batching of query encoding", "",
           f"Command: `.venv/bin/python bench/query_bench.py {' '.join(sys.argv[1:])}`  ",
           f"Machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
           f"{len(photos)} COCO photos (~640x480 JPEG) sent as multipart uploads; "
           f"{args.rounds} interleaved rounds of {args.image_seconds:g} s.", "",
           "QPS by VSEARCH_QUERY_BATCH_MAX (1: every query runs the model on its own thread); "
           "p50 ms in brackets; the model alone (preprocessed pixels, in-process, batch 1 and 4) "
           "is the ceiling.", "",
           "| encoder | concurrency | max 1 | max 4 | max 32 | max 4 / max 1 | max 32 / max 1 | model alone img/s (batch 1 / 4) |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    clip_dir = Path(tempfile.mkdtemp(prefix="clip-b32-"))
    save_random_clip_b32(clip_dir)
    for label, spec in (
        ("EfficientNet-Lite0", "efficientnet-lite0"),
        ("CLIP ViT-B/32 shape, random", f"clip:{clip_dir}"),
    ):
        encoder = load_encoder(spec, device="cpu")
        root = Path(tempfile.mkdtemp(prefix="image-bench-"))
        store = LocalStore(root / "store")
        n = 5000
        xb = np.random.default_rng(0).standard_normal((n, encoder.dim)).astype("float32")
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        publish(store, build_snapshot(store, snapshot_id(1), xb, np.arange(n, dtype="int64"),
                                      nshards=1, encoder=encoder.info))  # fmt: skip
        env = {"VSEARCH_DATA_DIR": str(root / "data"), "VSEARCH_STORE": str(root / "store"),
               "VSEARCH_QUERY_ENCODER": spec, "VSEARCH_QUERY_CACHE": "off"}  # fmt: skip
        runs: dict[tuple[int, int], list[tuple[list[float], float]]] = {}
        alone: dict[int, list[float]] = {}
        pixels = np.stack([encoder.preprocess(decode_photo(ph)) for ph in photos[:4]])
        with contextlib.ExitStack() as stack:
            bases = {
                b: stack.enter_context(running_service(service_env(env, 1, 16, batch=b)))
                for b in modes
            }
            for base in bases.values():  # load the encoder before measuring
                Http(base, 1).post(0, "/v1/search", *multipart(photos[0]))
            for _ in range(args.rounds):
                for bs in (1, 4):
                    alone.setdefault(bs, []).append(
                        model_rate(encoder, pixels[:bs], args.image_seconds / 2)
                    )
                for c in (1, 8, 16):
                    for batch, base in bases.items():
                        client = Http(base, c)
                        lat, qps, err, _ = run_load(lambda w, r: client.post(w, "/v1/search", *multipart(photos[r])),
                                                    c, args.image_seconds, len(photos))  # fmt: skip
                        client.close()
                        assert err == 0, f"{err} failed image queries"
                        runs.setdefault((c, batch), []).append((lat, qps))
        ceiling = f"{np.median(alone[1]):.1f} / {np.median(alone[4]):.1f}"
        for c in (1, 8, 16):
            q = {b: float(np.median([r[1] for r in runs[(c, b)]])) for b in modes}
            p = {b: float(np.median([pct(r[0], 50) for r in runs[(c, b)]])) for b in modes}
            cells = " | ".join(f"{q[b]:.1f} ({p[b]:.0f})" for b in modes)
            out.append(
                f"| {label} | {c} | {cells} | {q[4] / q[1]:.2f}x | {q[32] / q[1]:.2f}x | {ceiling} |"
            )
    out += ["", "The three services run side by side (1 worker x 16 threads each, "
            "VSEARCH_QUERY_BATCH_WAIT_MS=2); every round measures each at each concurrency in turn. "
            "No GPU was lent to this task: the CLIP fp16 figure on a GPU is not measured.",
            f"Load average at the end: {os.getloadavg()[0]:.1f}; {time.time() - started:.0f} s in all."]  # fmt: skip
    Path(args.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


def decode_photo(data: bytes) -> Any:
    from vsearch.imaging import decode_image

    return decode_image(data, max_pixels=40_000_000, max_side=1024)


def model_rate(encoder: Any, pixels: np.ndarray, seconds: float) -> float:
    """Images per second of the model alone on ``pixels`` (one batch per call)."""
    encoder.encode_pixels(pixels)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        encoder.encode_pixels(pixels)
        n += len(pixels)
    return n / (time.perf_counter() - start)


def coco_photos(n: int) -> list[bytes]:
    import tarfile

    photos = []
    with tarfile.open(SHARED_DATA / "coco256-000.tar") as tar:
        for member in tar:
            if member.name.endswith(".jpg"):
                f = tar.extractfile(member)
                assert f is not None
                photos.append(f.read())
                if len(photos) == n:
                    break
    return photos


def multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "vsearchbenchboundary"
    body = io.BytesIO()
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n10\r\n'.encode())
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
               "Content-Type: image/jpeg\r\n\r\n".encode())  # fmt: skip
    body.write(photo + f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["vectors", "images"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--image-seconds", type=float, default=8.0)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("--datasets", default="cifar,clustered")
    parser.add_argument("--cifar-train", default="cifar10-train-00[0-4].tar", help="tar glob")
    parser.add_argument("--clustered-n", type=int, default=200_000)
    args = parser.parse_args()
    (run_vectors if args.what == "vectors" else run_images)(args)


if __name__ == "__main__":
    main()
