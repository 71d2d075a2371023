#!/usr/bin/env python3
"""End-to-end check of bench/peer/clip_back_serve.py (run with the peer venv's python).

    .bench-venvs/clip-retrieval/bin/python bench/peer/check_clip_back.py [--n 20000] [--nprobe 8]

Builds a small IDMap,OPQ8,IVF64,PQ8x4fsr,Refine(SQ8) inner-product index over
random unit vectors (ids non-contiguous, as in a vsearch shard), serves it with
clip_back_serve.py --strip-idmap --nprobe N, sends vector queries over HTTP,
checks the ext ids and similarities against a direct faiss search of the same
file at the same nprobe, times sequential queries, and stops the server.
Single-threaded faiss on both sides (--omp-threads 1).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import faiss
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--checks", type=int, default=20)
    ap.add_argument("--timed", type=int, default=200)
    ap.add_argument("--metadata", default="parquet")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.n, args.dim)).astype("float32")
    faiss.normalize_L2(xb)
    ids = np.arange(args.n, dtype=np.int64) * 7 + 1_000_000  # not positions
    t0 = time.time()
    index = faiss.index_factory(
        args.dim, "IDMap,OPQ8,IVF64,PQ8x4fsr,Refine(SQ8)", faiss.METRIC_INNER_PRODUCT
    )
    index.train(xb)
    index.add_with_ids(xb, ids)
    print(f"built {args.n}x{args.dim} in {time.time() - t0:.1f}s")

    tmp = tempfile.mkdtemp(prefix="clip-back-check-")
    path = os.path.join(tmp, "shard.index")
    faiss.write_index(index, path)
    # direct search: same file, same nprobe, same (stored) k_factor
    direct = faiss.read_index(path)
    faiss.extract_index_ivf(direct).nprobe = args.nprobe

    xq = rng.standard_normal((max(args.checks, args.timed), args.dim)).astype("float32")
    faiss.normalize_L2(xq)

    port = free_port()
    cmd = [
        sys.executable,
        os.path.join(HERE, "clip_back_serve.py"),
        path,
        str(args.dim),
        str(port),
        "--metric",
        "ip",
        "--strip-idmap",
        "--nprobe",
        str(args.nprobe),
        "--omp-threads",
        "1",
        "--no-access-log",
        "--metadata",
        args.metadata,
    ]
    print("$", " ".join(cmd))
    log = open(os.path.join(tmp, "server.log"), "w+")  # noqa: SIM115 (closed in finally)
    srv = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while True:
            if srv.poll() is not None:
                log.seek(0)
                sys.exit("server died:\n" + log.read())
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/indices-list")
                r = c.getresponse()
                body = r.read()
                if r.status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        print(f"ready in {time.time() - t0:.1f}s: GET /indices-list -> {body.decode().strip()}")

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def query(v: np.ndarray) -> list[dict]:
            body = json.dumps(
                {
                    "embedding_input": [float(x) for x in v],
                    "modality": "image",
                    "num_images": args.k,
                    "indice_name": "peer",
                    "use_mclip": False,
                    "deduplicate": False,
                    "use_safety_model": False,
                    "use_violence_detector": False,
                    "aesthetic_score": "",
                    "aesthetic_weight": "",
                }
            )
            conn.request("POST", "/knn-service", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"{r.status}: {data[:500]!r}")
            return json.loads(data)

        first = query(xq[0])
        print("sample response[:2]:", json.dumps(first[:2]))
        dist, lab = direct.search(xq[: args.checks], args.k)
        exact = overlap = 0
        max_dd = 0.0
        for q in range(args.checks):
            hits = query(xq[q])
            got = [h["ext_id"] for h in hits]
            exact += got == lab[q].tolist()
            overlap += len(set(got) & set(lab[q].tolist()))
            sims = np.array([h["similarity"] for h in hits])
            max_dd = max(max_dd, float(np.max(np.abs(sims - dist[q]))))
        print(
            f"agreement over {args.checks} queries (k={args.k}, nprobe={args.nprobe}): "
            f"identical ranked lists {exact}/{args.checks}, id overlap "
            f"{overlap}/{args.checks * args.k}, max |similarity - faiss distance| {max_dd:.2e}"
        )

        for v in xq[:10]:  # warm
            query(v)
        t0 = time.perf_counter()
        for v in xq[: args.timed]:
            query(v)
        http_ms = (time.perf_counter() - t0) * 1e3 / args.timed
        t0 = time.perf_counter()
        for v in xq[: args.timed]:
            direct.search(v[None, :], args.k)
        faiss_ms = (time.perf_counter() - t0) * 1e3 / args.timed
        print(
            f"{args.timed} sequential queries, one keep-alive connection: {http_ms:.2f} ms/query "
            f"(direct faiss search of the same index in-process: {faiss_ms:.3f} ms/query)"
        )
        print("clip back's own breakdown (GET /metrics-summary):")
        conn.request("GET", "/metrics-summary")
        print(conn.getresponse().read().decode())
    finally:
        srv.terminate()
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.seek(0)
        print("--- server log ---\n" + log.read().strip())
        log.close()
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
