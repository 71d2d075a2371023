"""The rates behind ``vsearch/index/cost.py``, measured: what ``choose_spec`` assumes.

One thread, one query at a time (as the service asks), each figure next to the
constant it calibrates:

- brute-force scan of float32 vectors (``FLAT_MACS_PER_MS``);
- an IVF-SQ8 list scan (``SQ8_DIMS_PER_MS``): the slope of ms over nprobe;
- a 4-bit fast-scan list scan into a 64*10 shortlist (``FASTSCAN_CODES_PER_MS``);
- an HNSW32 search over the IVF centroids (``HNSW_QUANTIZER_DISTANCES``, in
  distance computations at the flat rate);
- the nprobe at which IVF-SQ8 reaches recall@10 0.95 on real image embeddings
  (``NPROBE_PER_SQRT_NLIST``), held-out items without themselves, as the validator
  measures; and the recall@10 of an exhaustive SQ8 scan (why SQ8 lists need no
  re-ranking);
- the resident memory of a process holding the query encoder and the service's
  modules, before any index (``DEFAULT_MEMORY_FLOOR_MB``).

    .venv/bin/python bench/index_cost_model.py --out bench/results/index_cost_model.md

Real vectors: CIFAR-10 EfficientNet-Lite0 features from bench/index_defaults.py's
loader (embedded once into its cache).
"""

# ruff: noqa: E741  -- D, I: the field's names for distances and ids
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_bench import SHARED_DATA, machine, markdown  # bench/, beside this script
from index_defaults import CACHE, cifar_60k

from vsearch.index import cost
from vsearch.index.evaluate import drop_self, recall_at
from vsearch.index.synthetic import clustered_vectors

IP = faiss.METRIC_INNER_PRODUCT


def ms_one_at_a_time(index: faiss.Index, xq: np.ndarray, k: int) -> float:
    start = time.perf_counter()
    for i in range(len(xq)):
        index.search(xq[i : i + 1], k)
    return (time.perf_counter() - start) * 1000 / len(xq)


def flat_rate(x: np.ndarray) -> list[dict]:
    rows = []
    for n in (3_000, 10_000, 30_000):
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x[:n])
        ms = ms_one_at_a_time(index, x[-100:], 10)
        rows.append({"what": f"exact scan {n} x {x.shape[1]}", "measured": n * x.shape[1] / ms,
                     "unit": "MACs/ms", "model": cost.FLAT_MACS_PER_MS})  # fmt: skip
    return rows


def held_out(x: np.ndarray, nq: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validator-style queries: database items, their own id dropped from both sides."""
    qi = np.random.default_rng(0).choice(len(x), nq, replace=False).astype("int64")
    _, gt = faiss.knn(x[qi], x, 11, metric=IP)
    return qi, x[qi], drop_self(gt, qi, 10)


def sq8_rows(x: np.ndarray, nlist: int) -> list[dict]:
    qi, xq, gt = held_out(x)
    index = faiss.index_factory(x.shape[1], f"IVF{nlist},SQ8", IP)
    keep = np.ones(len(x), bool)
    keep[qi] = False
    index.train(x[keep])
    index.add(x)
    reached, times = None, {}
    for nprobe in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        index.nprobe = nprobe
        _, I = index.search(xq, 11)
        if reached is None and recall_at(drop_self(I, qi, 10), gt, 10) >= 0.95:
            reached = nprobe
        if nprobe in (4, 64):
            times[nprobe] = ms_one_at_a_time(index, xq[:200], 11)
    rate = (64 - 4) * len(x) / nlist * x.shape[1] / (times[64] - times[4])
    n = f"{len(x) // 1000}k"
    return [
        {"what": f"IVF{nlist},SQ8 list scan, CIFAR-10 {n}", "measured": rate,
         "unit": "dims/ms", "model": cost.SQ8_DIMS_PER_MS},
        {"what": f"IVF{nlist},SQ8 nprobe reaching recall@10 0.95, CIFAR-10 {n}",
         "measured": (reached or 0) / nlist**0.5, "unit": "x sqrt(nlist)",
         "model": cost.NPROBE_PER_SQRT_NLIST},
    ]  # fmt: skip


def exhaustive_sq8(x: np.ndarray) -> dict:
    qi, xq, gt = held_out(x)
    index = faiss.index_factory(x.shape[1], "SQ8", IP)
    index.train(x)
    index.add(x)
    _, I = index.search(xq, 11)
    return {"what": f"exhaustive SQ8 recall@10, CIFAR-10 {len(x) // 1000}k",
            "measured": recall_at(drop_self(I, qi, 10), gt, 10), "unit": "recall@10",
            "model": "no re-ranking"}  # fmt: skip


def fastscan_rows() -> list[dict]:
    n, d = 200_000, 480
    x, _ = clustered_vectors(n + 200, d, nclusters=500, seed=0)
    rows = []
    for m in (20, 60):
        index = faiss.index_factory(d, f"IVF1024,PQ{m}x4fs", IP)
        index.train(x[:65_536])
        index.add(x[:n])
        times = {}
        for nprobe in (16, 256):
            index.nprobe = nprobe
            times[nprobe] = ms_one_at_a_time(index, x[n:], 640)
        codes = (256 - 16) * n / 1024
        rows.append({"what": f"fast-scan IVF1024,PQ{m}x4fs, k=640, {n // 1000}k x {d}",
                     "measured": codes / (times[256] - times[16]), "unit": "codes/ms",
                     "model": cost.FASTSCAN_CODES_PER_MS})  # fmt: skip
    return rows


def hnsw_rows(x: np.ndarray) -> list[dict]:
    rows = []
    for nlist in (1024, 4096):
        km = faiss.Kmeans(x.shape[1], nlist, niter=10, seed=0, spherical=True)
        km.train(x[: 39 * nlist] if len(x) >= 39 * nlist else x)
        hnsw = faiss.IndexHNSWFlat(x.shape[1], cost.HNSW_QUANTIZER_LINKS, IP)
        hnsw.add(km.centroids)
        hnsw.hnsw.efSearch = 64
        ms = ms_one_at_a_time(hnsw, x[-200:], 64)
        rows.append({"what": f"HNSW32 over {nlist} CIFAR centroids, efSearch 64",
                     "measured": ms * cost.FLAT_MACS_PER_MS / x.shape[1],
                     "unit": "distances at the flat rate",
                     "model": cost.HNSW_QUANTIZER_DISTANCES})  # fmt: skip
    return rows


def service_rss() -> dict:
    """VmRSS of a fresh interpreter that imports the service and loads the encoder."""
    code = (
        "import os, service\n"
        "from vsearch.encoders import load_encoder\n"
        "load_encoder('efficientnet-lite0', device='cpu')\n"
        "print(open(f'/proc/{os.getpid()}/status').read().split('VmRSS:')[1].split()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    return {"what": "RSS of a process with the service's modules and its query encoder",
            "measured": int(out.stdout.split()[-1]) / 1024, "unit": "MiB",
            "model": "floor 256 MiB"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared tar shards")
    ap.add_argument("--out", help="also write the table to this markdown file")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x = cifar_60k(args.data, CACHE / "cifar")
    rows = flat_rate(x) + sq8_rows(x[::6], 256) + sq8_rows(x, 1024) + [exhaustive_sq8(x[::6])]
    rows += fastscan_rows() + hnsw_rows(x) + [service_rss()]
    for r in rows:
        r["measured"] = float(f"{r['measured']:.3g}")
    table = markdown(rows)
    print(table)
    if args.out:
        cmd = ".venv/bin/python bench/index_cost_model.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(
            "# The cost model's rates, measured\n\n"
            f"Command: `{cmd}`  \nMachine: {machine()}; faiss {faiss.__version__}; 1 thread, "
            f"one query at a time; {time.perf_counter() - t0:.0f} s total. The model column is "
            "the constant in vsearch/index/cost.py (or spec.py) that the row calibrates.\n\n"
            f"{table}\n"
        )
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
