"""Every collection size on defaults: the spec ``choose_spec`` picks, built and gated.

Each row is a collection imported as precomputed vectors (``.npy`` + ids) and run
through the real stages with no options: ``plan`` -> ``embed`` -> ``build_index``
(train -> shards -> validate -> publish), on the default budgets (48 B/vector,
1 ms/query, the memory floor) and the default gate (recall@10 0.95). The gate
must pass at every size; a row whose gate fails is printed and the script exits 1.

Columns: the chosen factory; resident bytes per vector as the service loads the
shard (file size less the memory-mapped re-ranking codes, plus the id map that
IndexIDMap2 rebuilds on load); recall@10 and ms per
query at the validator's default nprobe (held-out items against exact search
over all vectors, a batch on one thread); the median ms of 200 queries one at a
time, as the service asks (shard memory-mapped); train + shard build seconds.

    .venv/bin/python bench/index_defaults.py                      # coco, cifar 1k/10k/60k
    .venv/bin/python bench/index_defaults.py --rows synthetic-1m  # 1M x 512: many minutes
    .venv/bin/python bench/index_defaults.py --rows all --out bench/results/index_defaults.md

Data: ``coco``: the 256 COCO photos of ../shared/data, EfficientNet-Lite0 at its
native 224 px. ``cifar-*``: EfficientNet-Lite0 features (96 px, as in
bench/index_bench.py, whose loader and cache they share) of CIFAR-10's 50k train
and 10k test images; 1k and 10k are every 60th and every 6th of the 60k (the
shards are sorted by class: balanced). ``synthetic-1m``: vsearch.index.synthetic
clustered unit vectors, 512-d (index_bench's loader).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_bench import (  # bench/, beside this script
    SHARED_DATA,
    load_cifar,
    load_synthetic,
    machine,
    markdown,
    timed_search,
)

from vsearch import stages
from vsearch.index import RecallGateFailed
from vsearch.index.structure import refine_store_bytes, search_params
from vsearch.storage import LocalStore

SID = "20260101T000000Z"
CACHE = Path.home() / ".cache" / "vsearch-bench"


def load_coco(data: Path, cache: Path) -> np.ndarray:
    from vsearch.embedding.partitions import read_partition
    from vsearch.embedding.worker import embed_partition
    from vsearch.encoders import load_encoder
    from vsearch.sources import open_source

    store, encoder = LocalStore(cache), load_encoder("efficientnet-lite0")
    source = open_source(str(data / "coco256-000.tar"))
    for spec in source.partitions():
        embed_partition(store, SID, spec["index"], source.items(spec), encoder, batch_size=32,
                        input_fingerprint=source.fingerprint(spec))  # fmt: skip
    parts = [read_partition(store, SID, s["index"])[0] for s in source.partitions()]
    return np.concatenate(parts).astype("float32")


def cifar_60k(data: Path, cache: Path) -> np.ndarray:
    xb, xq = load_cifar(10_000, data, cache)  # 50k train + every test image
    return np.concatenate([xb, xq])


def datasets(data: Path) -> dict[str, tuple[str, Callable[[], np.ndarray]]]:
    return {
        "coco": ("COCO photos", lambda: load_coco(data, CACHE / "coco")),
        "cifar-1k": ("CIFAR-10", lambda: cifar_60k(data, CACHE / "cifar")[::60]),
        "cifar-10k": ("CIFAR-10", lambda: cifar_60k(data, CACHE / "cifar")[::6]),
        "cifar-60k": ("CIFAR-10", lambda: cifar_60k(data, CACHE / "cifar")),
        "synthetic-1m": ("synthetic clustered", lambda: load_synthetic(1_000_000, 0)[0]),
    }


def import_vectors(store: LocalStore, folder: Path, xb: np.ndarray) -> None:
    """``xb`` as a precomputed-embeddings source, planned and imported by the stages."""
    folder.mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(len(xb)), max(1, len(xb) // 100_000))):
        np.save(folder / f"part-{i}.npy", xb[rows])
        np.save(folder / f"part-{i}.ids.npy", rows.astype("int64"))
    for task in stages.plan(store, SID, [str(folder)], run={"dag_id": "bench"}):
        stages.embed(store, SID, task)


def one_at_a_time(index: faiss.Index, xq: np.ndarray, nprobe: int | None) -> float:
    params = search_params(index, nprobe)
    return float(np.median([timed_search(index, xq[i : i + 1], 10, params)[1]
                            for i in range(len(xq))]))  # fmt: skip


def run(name: str, data: str, xb: np.ndarray, work: Path) -> tuple[dict, dict]:
    store = LocalStore(work / "store")
    import_vectors(store, work / "vectors", xb)
    marks = [("start", time.perf_counter())]
    failed = None
    try:
        stages.build_index(store, SID, on_stage=lambda s, _: marks.append((s, time.perf_counter())))
    except RecallGateFailed as e:
        failed = str(e)
    report = json.loads(store.get(f"indexes/{SID}/report.json"))
    trained = json.loads(store.get(f"indexes/{SID}/trained.json"))
    built = next(t for s, t in marks if s == "build_shard") - marks[0][1]
    shard = report["shards"][0]
    path = work / "shard.index"
    store.download_file(shard["uri"], path)
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)  # as the service loads it
    idmap2 = 48 * len(xb) if isinstance(index, faiss.IndexIDMap2) else 0  # rebuilt on load
    resident = (path.stat().st_size - refine_store_bytes(index) + idmap2) / len(xb)
    nprobe = report["default_nprobe"]
    xq = xb[np.random.default_rng(0).choice(len(xb), min(200, len(xb)), replace=False)]
    recall = report["recall"]["image_to_image"]
    row = {
        "n": len(xb),
        "d": xb.shape[1],
        "data": data,
        "chosen factory": report["spec"]["factory"],
        "resident B/vector": round(resident, 1),
        "nprobe": nprobe if nprobe is not None else "-",
        "recall@10": recall["recall@10"],
        "ms/query (batch)": report["latency"]["ms_per_query_at_default"]
        or report["sweep"]["image_to_image"][-1][3],
        "ms/query (one)": round(one_at_a_time(index, xq, nprobe), 3),
        "build s": round(built, 2),
        "gate": "passed" if report["gate"]["passed"] else "FAILED",
    }
    detail = {
        "name": name,
        "train s": trained["train_seconds"],
        "validate s": report["seconds"]["validate"],
        "reasons": report["spec"]["reasons"],
        "curve": report["curve"],
        "failed": failed,
    }
    return row, detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared tar shards")
    rows = ", ".join(datasets(SHARED_DATA))
    ap.add_argument("--rows", default="coco,cifar-1k,cifar-10k,cifar-60k",
                    help=f"comma-separated, or 'all': {rows}")  # fmt: skip
    ap.add_argument("--out", help="also write the table and the reasons to this markdown file")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    import torch

    torch.set_num_threads(1)
    known = datasets(args.data)
    names = list(known) if args.rows == "all" else args.rows.split(",")
    t0 = time.perf_counter()
    rows, details = [], []
    for name in names:
        data, load = known[name]
        xb = load()
        print(f"{name}: {xb.shape}", flush=True)
        with tempfile.TemporaryDirectory(prefix="vsearch-bench-") as tmp:
            row, detail = run(name, data, xb, Path(tmp))
        print(markdown([row]), "\n", "; ".join(detail["reasons"]), flush=True)
        rows.append(row)
        details.append(detail)
    table = markdown(rows)
    notes = [
        f"- **{d['name']}**: train {d['train s']:.1f} s, validation {d['validate s']:.1f} s; "
        f"curve [nprobe, recall@10, ms] {d['curve']}; why: " + "; ".join(d["reasons"])
        + (f"; **gate failed**: {d['failed']}" if d["failed"] else "")
        for d in details
    ]  # fmt: skip
    print(table)
    if args.out:
        cmd = ".venv/bin/python bench/index_defaults.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(
            "# Every collection size on defaults\n\n"
            f"Command: `{cmd}`  \nMachine: {machine()}; faiss {faiss.__version__}; 1 thread; "
            f"{time.perf_counter() - t0:.0f} s total.\n\n{table}\n\n" + "\n".join(notes) + "\n"
        )
        print(f"wrote {args.out}")
    if any(d["failed"] for d in details):
        sys.exit(1)


if __name__ == "__main__":
    main()
