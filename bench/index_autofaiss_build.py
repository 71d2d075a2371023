"""Build an autofaiss index: run in the bench venv only (autofaiss is not a project
dependency). bench/index_bench.py calls this with --autofaiss PYTHON.

Set the venv up once (no torch is pulled; faiss-cpu is the project's version):

    python3.11 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install autofaiss==2.18.0 pyarrow==17.0.0

(autofaiss pins numpy<2, and the newest pyarrow needs numpy 2: pin pyarrow.)
autofaiss 2.18 predates faiss 1.15 in one place (OPQMatrix keyword arguments):
this script shims that call so both sides run the same faiss build.

Usage: index_autofaiss_build.py VECTORS.npy BUDGET_MB MAX_QUERY_MS OUT.index
Writes OUT.index and OUT.index.run.json ({seconds, infos}).
"""

from __future__ import annotations

import json
import logging
import sys
import time

import faiss
import numpy as np


class _OPQMatrix(faiss.OPQMatrix):  # type: ignore[misc]
    """autofaiss 2.18 calls OPQMatrix(d, M=.., d2=..); faiss 1.15's SWIG constructor
    takes positional arguments only. Same class, positional call: no other change."""

    def __init__(self, d: int = 0, M: int = 1, d2: int = -1) -> None:
        super().__init__(d, M, d2)


faiss.OPQMatrix = _OPQMatrix  # before autofaiss looks it up

from autofaiss import build_index  # noqa: E402


def main() -> None:
    vectors, budget_mb, max_ms, out = (
        sys.argv[1],
        float(sys.argv[2]),
        float(sys.argv[3]),
        sys.argv[4],
    )
    logging.basicConfig(level=logging.WARNING)
    xb = np.load(vectors)
    start = time.perf_counter()
    _, infos = build_index(
        embeddings=xb,
        index_path=out,
        index_infos_path=out + ".infos.json",
        save_on_disk=True,
        max_index_memory_usage=f"{budget_mb:.3f}MB",
        current_memory_available="8G",
        max_index_query_time_ms=max_ms,
        metric_type="ip",
        nb_cores=1,  # the same single core as the vsearch build it is compared with
        verbose=logging.WARNING,
    )
    seconds = time.perf_counter() - start
    with open(out + ".run.json", "w") as f:
        json.dump({"seconds": seconds, "infos": infos}, f, default=str)


if __name__ == "__main__":
    main()
