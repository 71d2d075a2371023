#!/usr/bin/env python3
"""Serve a faiss index with clip-retrieval's "clip back", as a peer baseline.

README
======
Run with the peer venv (``bash bench/peer/setup_clip_retrieval.sh`` makes it)::

    .bench-venvs/clip-retrieval/bin/python bench/peer/clip_back_serve.py \
        SHARD.index 512 8765 --metric ip --strip-idmap --nprobe 16

What is served
    clip-retrieval 2.45.0's own entry point ``clip_retrieval.clip_back.clip_back()``,
    unchanged: its Flask app (flask-restful resources, CORS, prometheus
    ``/metrics`` middleware, the static front routes) on **Werkzeug's threaded
    server**, ``app.run(debug=False)`` -- what ``clip-retrieval back`` runs. That is
    ``werkzeug.serving.ThreadedWSGIServer``: one new (daemon) thread per
    connection, no pool, no cap, HTTP/1.1 keep-alive. Flask prints its "development
    server" warning; clip back has no gunicorn/uwsgi mode. The only change to
    it: ``Flask.run`` is wrapped to bind 127.0.0.1 instead of clip back's
    hard-coded 0.0.0.0. Each request is logged to stderr by werkzeug, as clip
    back does (``--no-access-log`` turns that off).

Query (vector only)::

    POST http://127.0.0.1:PORT/knn-service
    Content-Type: application/json
    {"embedding_input": [f0, ..., f{DIM-1}], "modality": "image",
     "num_images": 10, "indice_name": "peer",
     "deduplicate": false, "use_safety_model": false,
     "use_violence_detector": false, "use_mclip": false,
     "aesthetic_score": "", "aesthetic_weight": ""}

    -> 200 [{"ext_id": 123456, "id": 42, "similarity": 0.81}, ...]   (best first)

    Required keys (KnnService.post indexes them): modality, num_images,
    indice_name. Optional: num_result_ids (k asked of faiss; defaults to
    num_images), deduplicate (False by default over HTTP), the rest default off.
    The vector is used as sent (float32, not normalized by clip back).
    ``id`` is the position in the served index; ``ext_id`` is the id in the
    index you gave (the IndexIDMap id with --strip-idmap, else the position):
    compare ``ext_id`` with your system's ids. ``similarity`` is faiss's distance.

Readiness: ``GET http://127.0.0.1:PORT/indices-list`` -> 200 ``["peer"]``. The
    socket only opens after the index and metadata are loaded (clip back's
    ``Health`` class exists but is not routed). ``GET /metrics-summary`` gives
    clip back's own per-step timing (knn, metadata, dedup, ...).

What is stubbed / laid out (in a temp dir, removed on exit; --workdir keeps it)
    * CLIP model: ``load_clip_index`` does ``from all_clip import load_clip``; a
      stub ``all_clip`` module is put in ``sys.modules`` whose model raises on
      encode_text/encode_image, so text/image queries return 500. No weights.
    * ``clip_retrieval/__init__.py`` is not run (it imports the whole toolkit:
      inference, autofaiss, img2dataset, wandb...); ``clip_retrieval.clip_back``
      is imported as a submodule of an un-executed package module.
    * torch is real (CPU): compute_query does ``import torch`` on every query.
    * ``<dir>/index/image.index``: your index (copied/rewritten, or symlinked when
      nothing changes), ``indices.json``: ``{"peer": "<dir>/index"}``.
    * ``<dir>/index/metadata/``: one column ``ext_id`` (int64), one row per
      vector, and ``columns_to_return=["ext_id"]``. ``--metadata`` picks the
      provider: ``parquet`` (default, clip back's default: pandas row slice
      per hit), ``hdf5`` (clip back converts the parquet at start; h5py read
      per hit), ``arrow`` (an Arrow IPC file, as LAION's deployment used),
      ``memory`` (NOT clip back's: a numpy lookup replacing
      load_metadata_provider, to isolate search + HTTP cost).
    * Off: mclip (enable_mclip_option=False), aesthetic embeddings
      (provide_aesthetic_embeddings=False; clip back's default True would
      download them), safety model and violence detector (not provided, so
      use_* in the request are no-ops), ivf metadata reordering.

IDMap
    clip back runs ``index.search_and_reconstruct(query, k)``, which an
    ``IndexIDMap`` cannot do (faiss: "reconstruct not implemented"), and looks
    metadata up by result position. ``--strip-idmap`` serves
    ``faiss.downcast_index(idx.index)`` (e.g. Refine(SQ8) > OPQ > IVF-PQfs) and
    puts the IDMap's ids in the ``ext_id`` column. Without it an IDMap index
    is refused.

nprobe / k_factor
    clip back never sets nprobe on the default path (only with
    reorder_metadata_by_ivf_index and num_result_ids >= 100000, via
    ParameterSpace); it searches with the nprobe stored in the index file (as
    autofaiss tunes and saves it). So ``--nprobe N`` sets
    ``faiss.extract_index_ivf(index).nprobe = N`` before the index is written to
    the temp dir (an HNSW coarse quantizer also gets efSearch = max(64, 2N), as
    vsearch's ``search_params`` does), and ``--k-factor K`` sets the
    IndexRefine layer's k_factor (faiss serializes all three; without the flag
    the stored k_factor stays, which is also what vsearch uses by default).
    The values clip back actually loaded are printed at start
    ("clip back loaded image.index: ...").

Caveats for a fair comparison
    * Per query clip back also: json parse, ``import torch`` (a dict lookup),
      search_and_reconstruct (k reconstructions, here from the SQ8 refine
      codes), L2-normalizing the k vectors, post_filter (nothing with
      deduplicate=false), a metadata lookup per hit (the ``--metadata``
      provider; parquet is a pandas slice per hit), prometheus histograms,
      werkzeug's access log line, a thread spawned per connection.
    * With deduplicate=true (clip front's default) it builds an IndexFlatIP
      over the k results and range-searches it: keep it false to compare search.
    * faiss threads: clip back leaves OpenMP at its default (all cores, or
      OMP_NUM_THREADS); ``--omp-threads N`` calls faiss.omp_set_num_threads(N).
      Threads per request are unbounded, so concurrent load oversubscribes.
    * Peer venv versions: faiss-cpu 1.15.1 (same as vsearch), numpy 1.26.4
      (clip-retrieval needs numpy<2), torch 2.13.0+cpu.
    * --strip-idmap / --nprobe / --k-factor rewrite the whole index into the
      temp dir: disk and load time of one extra copy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import types

INDICE_NAME = "peer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("index_file", help="faiss index file (e.g. one vsearch shard)")
    p.add_argument("dim", type=int, help="vector dimension (checked against the index)")
    p.add_argument("port", type=int)
    p.add_argument("--metric", choices=("ip", "l2"), default="ip", help="checked against the index")
    p.add_argument(
        "--strip-idmap",
        action="store_true",
        help="serve the index inside IndexIDMap[2]; its ids go to metadata column ext_id",
    )
    p.add_argument("--nprobe", type=int, help="bake this nprobe into the served index file")
    p.add_argument(
        "--k-factor", type=float, help="bake this IndexRefine k_factor into the served index file"
    )
    p.add_argument("--metadata", choices=("parquet", "hdf5", "arrow", "memory"), default="parquet")
    p.add_argument(
        "--omp-threads", type=int, help="faiss.omp_set_num_threads (default: leave faiss's default)"
    )
    p.add_argument(
        "--no-access-log", action="store_true", help="silence werkzeug's per-request log line"
    )
    p.add_argument(
        "--workdir",
        help="lay the index dir out here and keep it (default: temp dir, removed on exit)",
    )
    return p.parse_args(argv)


def import_clip_back() -> types.ModuleType:
    """clip_retrieval.clip_back without running clip_retrieval/__init__.py, CLIP stubbed."""
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None:
        sys.exit("clip_retrieval not installed: run with .bench-venvs/clip-retrieval/bin/python")
    pkg = importlib.util.module_from_spec(spec)  # package module, __init__ not executed
    sys.modules["clip_retrieval"] = pkg

    class _NoClip:
        def _refuse(self, *_a, **_k):
            raise RuntimeError("CLIP model stubbed in clip_back_serve.py: send embedding_input")

        encode_text = encode_image = __call__ = _refuse

    def load_clip(clip_model="ViT-B/32", use_jit=True, device="cpu", **_kw):
        noclip = _NoClip()
        return noclip, noclip._refuse, noclip._refuse  # model, preprocess, tokenizer

    stub = types.ModuleType("all_clip")
    stub.load_clip = load_clip
    sys.modules["all_clip"] = stub

    import clip_retrieval.clip_back as cb

    return cb


def describe(index) -> str:
    import faiss

    parts, cur = [], index
    while cur is not None:
        cur = faiss.downcast_index(cur)
        name = type(cur).__name__
        if isinstance(cur, faiss.IndexRefine):
            parts.append(f"{name}(k_factor={cur.k_factor:g})")
            cur = cur.base_index
        elif isinstance(cur, faiss.IndexIVF):
            parts.append(f"{name}(nlist={cur.nlist}, nprobe={cur.nprobe})")
            cur = None
        elif isinstance(cur, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            parts.append(name)
            cur = cur.index
        else:
            parts.append(name)
            cur = None
    return " > ".join(parts) + f"; ntotal={index.ntotal}"


def prepare_index(args: argparse.Namespace, index_dir: str):
    """Write <index_dir>/image.index as clip back must see it; return the ext ids."""
    import faiss
    import numpy as np

    top = faiss.read_index(args.index_file)
    if top.d != args.dim:
        sys.exit(f"{args.index_file}: d={top.d}, not {args.dim}")
    want = faiss.METRIC_INNER_PRODUCT if args.metric == "ip" else faiss.METRIC_L2
    if top.metric_type != want:
        sys.exit(f"{args.index_file}: metric_type={top.metric_type}, not {args.metric}")
    print(f"given: {describe(top)}", flush=True)

    index, changed = faiss.downcast_index(top), False
    ext_ids = None
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        if not args.strip_idmap:
            sys.exit(
                "index is an IndexIDMap: clip back's search_and_reconstruct cannot run on it "
                "and its metadata is looked up by position; pass --strip-idmap"
            )
        ext_ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        index, changed = faiss.downcast_index(index.index), True  # `top` keeps it alive
    if ext_ids is None:
        ext_ids = np.arange(index.ntotal, dtype=np.int64)

    if args.nprobe is not None:
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            sys.exit("--nprobe: the index has no IVF layer")
        ivf.nprobe = args.nprobe
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):  # as vsearch's search_params does
            quantizer.hnsw.efSearch = max(64, 2 * args.nprobe)
        changed = True
    if args.k_factor is not None:
        cur = index
        while not isinstance(cur, faiss.IndexRefine):
            if not hasattr(cur, "index"):
                sys.exit("--k-factor: the index has no IndexRefine layer")
            cur = faiss.downcast_index(cur.index)
        cur.k_factor = args.k_factor
        changed = True

    path = os.path.join(index_dir, "image.index")
    if changed:
        faiss.write_index(index, path)
    else:
        os.symlink(os.path.abspath(args.index_file), path)
    print(f"served: {describe(index)}", flush=True)
    return ext_ids


def write_metadata(kind: str, index_dir: str, ext_ids) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta_dir = os.path.join(index_dir, "metadata")
    os.makedirs(meta_dir)
    table = pa.table({"ext_id": pa.array(ext_ids, pa.int64())})
    if kind == "arrow":  # ArrowMetadataProvider memory-maps every file under metadata/
        path = os.path.join(meta_dir, "0000.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    else:  # parquet; hdf5: clip back converts it to <index_dir>/metadata.hdf5 itself
        pq.write_table(table, os.path.join(meta_dir, "0000.parquet"))


class MemoryMetadataProvider:
    """--metadata memory: ext ids from a numpy array (not clip back's code)."""

    def __init__(self, ext_ids):
        self.ext_ids = ext_ids

    def get(self, ids, cols=None):
        return [{"ext_id": int(self.ext_ids[i])} for i in ids]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cb = import_clip_back()
    import faiss
    import flask

    if args.omp_threads is not None:
        faiss.omp_set_num_threads(args.omp_threads)

    workdir = args.workdir or tempfile.mkdtemp(prefix="clip-back-peer-")
    keep = args.workdir is not None
    os.makedirs(workdir, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so the finally below runs
    try:
        index_dir = os.path.join(workdir, "index")
        if os.path.exists(index_dir):
            shutil.rmtree(index_dir)
        os.makedirs(index_dir)
        ext_ids = prepare_index(args, index_dir)
        write_metadata(args.metadata, index_dir, ext_ids)
        indices_json = os.path.join(workdir, "indices.json")
        with open(indices_json, "w", encoding="utf-8") as f:
            json.dump({INDICE_NAME: index_dir}, f)

        if args.metadata == "memory":
            cb.load_metadata_provider = lambda *_a, **_k: (MemoryMetadataProvider(ext_ids), None)

        real_load_index = cb.load_index

        def load_index(path, enable_faiss_memory_mapping):  # report what clip back got
            idx = real_load_index(path, enable_faiss_memory_mapping)
            print(f"clip back loaded {os.path.basename(path)}: {describe(idx)}", flush=True)
            return idx

        cb.load_index = load_index

        real_run = flask.Flask.run

        def run_loopback(self, host=None, port=None, debug=None, load_dotenv=True, **options):
            print(
                f"clip back serving on http://127.0.0.1:{port} "
                f"(werkzeug threaded={options.get('threaded', True)}); ready: GET /indices-list; "
                f"query: POST /knn-service indice_name={INDICE_NAME!r}",
                flush=True,
            )
            return real_run(
                self, host="127.0.0.1", port=port, debug=debug, load_dotenv=load_dotenv, **options
            )

        flask.Flask.run = run_loopback
        if args.no_access_log:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)

        cb.clip_back(
            indices_paths=indices_json,
            port=args.port,
            enable_hdf5=args.metadata == "hdf5",
            enable_faiss_memory_mapping=False,
            columns_to_return=["ext_id"],
            reorder_metadata_by_ivf_index=False,
            enable_mclip_option=False,
            use_jit=False,
            use_arrow=args.metadata == "arrow",
            provide_safety_model=False,
            provide_violence_detector=False,
            provide_aesthetic_embeddings=False,
        )
    except KeyboardInterrupt:
        pass
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
