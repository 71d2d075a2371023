"""Index training time on GPU vs CPU: the same spec, sample and seed, in the same run.

Both rows go through the real stage (``vsearch.index.train_index`` with
``device="cpu"`` and ``device="gpu"``, then ``build_shard``) on the same
partitions, so the ratio is what the pipeline's train task gains from a GPU.
recall@10 of each built index against exact search (same queries, the spec's
default nprobe) shows the GPU-trained index is as good. The GPU row's k-means
runs through faiss-gpu when faiss sees the GPU, else through torch on CUDA
(``vsearch.index.kmeans``); the table says which. Without a GPU the GPU row says
so and the CPU row still runs.

    .venv/bin/python bench/index_train_device.py --n 1000000          # on a GPU machine
    .venv/bin/python bench/index_train_device.py --n 100000 --threads 2  # smoke test, CPU

On a GPU machine either faiss is the GPU build (``pip install -e ".[gpu]"``, see
the README's GPU install) or torch sees CUDA: faiss-cpu plus a CUDA torch is
enough (the lent H100/H200 machines have torch; carry the faiss-cpu wheel).
Both rows use ``--threads`` OpenMP threads (default: every core) for the CPU
side of training.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_bench import load_synthetic, write_partitions  # bench/, beside this script

from vsearch.index import build_shard, train_index
from vsearch.index import kmeans as kmeans_module
from vsearch.index.evaluate import recall_at
from vsearch.index.kmeans import torch_cuda
from vsearch.index.structure import search_params
from vsearch.index.trained_record import read_trained_record
from vsearch.storage import LocalStore


def gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "unknown"


def run(store: LocalStore, sid: str, device: str, factory: str | None, xq, gt, nprobe) -> dict:
    start = time.perf_counter()
    train_index(store, sid, factory=factory, device=device)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    record = read_trained_record(store, sid)
    shard = build_shard(store, sid, 0, 1)
    index = faiss.read_index(str(store.root / shard["uri"]))
    spec = record.spec
    probe = nprobe or min(16, spec.nlist or 1)
    _, found = index.search(xq, 10, params=search_params(index, probe))
    return {
        "device": f"{device} (ran on {record.device}, k-means {record.kmeans})",
        "spec": spec.factory,
        "train vectors": record.n_train,
        "train s": seconds,
        "nprobe": probe,
        "recall@10": recall_at(found, gt, 10),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--factory", help="explicit spec (default: choose_spec for 48 B/vector)")
    ap.add_argument("--nprobe", type=int, help="for the recall check (default min(16, nlist))")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument(
        "--torch-on-cpu",
        action="store_true",
        help="add a row: the torch k-means (the GPU path without faiss-gpu) on torch's CPU",
    )
    ap.add_argument("--out", type=Path, help="markdown file (default: print only)")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    xb, xq = load_synthetic(args.n, args.nq, args.d)
    _, gt = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="vsearch-train-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        for device in ("cpu", "gpu") + (("torch-cpu",) if args.torch_on_cpu else ()):
            sid = f"20260101T000000Z-{device}"
            if device == "gpu" and faiss.get_num_gpus() == 0 and torch_cuda() is None:
                notes.append("gpu: not run, neither faiss nor torch sees a GPU here")
                continue
            write_partitions(store, sid, xb)
            if device == "torch-cpu":  # what train_index picks on CUDA, on the CPU instead
                kmeans_module.torch_cuda = lambda: "cpu"
                faiss.get_num_gpus = lambda: 0  # even where faiss-gpu is installed
                rows.append(run(store, sid, "auto", args.factory, xq, gt, args.nprobe))
                continue
            rows.append(run(store, sid, device, args.factory, xq, gt, args.nprobe))
    cpu_s = rows[0]["train s"]
    lines = [
        "| device | spec | train vectors | train s | x CPU time | nprobe | recall@10 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['spec']} | {r['train vectors']} | {r['train s']:.1f} | "
            f"{r['train s'] / cpu_s:.2f} | {r['nprobe']} | {r['recall@10']:.4f} |"
        )
    cpu = next((x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x), "")
    head = (
        f"# Index training, GPU vs CPU: synthetic {args.n} x {args.d}\n\n"
        f"Command: `.venv/bin/python bench/index_train_device.py {' '.join(sys.argv[1:])}`  \n"
        f"Machine: {cpu.split(':')[-1].strip() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} OpenMP threads; GPU: {gpu_name()}; faiss {faiss.__version__}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
    )
    doc = head + "\n" + "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes)
    print(doc)
    if args.out:
        args.out.write_text(doc)


if __name__ == "__main__":
    main()
