"""`vsearch train / build-shard / validate / publish-built / build`, run as a real
subprocess: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.index.snapshots import SID, write_vectors
from vsearch.catalog import read_current
from vsearch.storage import LocalStore

VSEARCH = str(Path(sys.executable).with_name("vsearch"))
NEWER = "20260302T000000Z"


def run(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VSEARCH_STORE": str(store), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [VSEARCH, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_stepwise_then_build_and_a_failed_gate(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    write_vectors(tmp_path / "vectors", n=3000)

    out = run("embed", str(tmp_path / "vectors"), "--snapshot", SID, store=root)
    assert out.returncode == 0, out.stderr
    assert "3 partition(s): 3000 embedded, 0 failed" in out.stdout
    out = run("train", SID, "--nshards", "2", "--memory-floor-mb", "0", store=root)
    assert out.returncode == 0, out.stderr
    assert "trained.index: IDMap,OPQ" in out.stdout and "nlist=" in out.stdout
    for j in range(2):
        out = run("build-shard", SID, "--shard", str(j), store=root)  # nshards: as trained
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["uri"].endswith(f"shard-000{j}.index")
    out = run("validate", SID, "--target-recall", "0.9", "--nq", "200", store=root)
    assert out.returncode == 0, out.stderr
    assert "gate passed" in out.stdout and "nprobe" in out.stdout
    out = run("publish-built", SID, store=root)
    assert out.returncode == 0, out.stderr
    assert f"CURRENT -> {SID}" in out.stdout
    live = read_current(store)
    assert live is not None and live.encoder.name == "synthetic" and live.encoder.normalized

    write_vectors(tmp_path / "newer", n=3000, seed=1)
    assert run("embed", str(tmp_path / "newer"), "--snapshot", NEWER, store=root).returncode == 0
    out = run("build", NEWER, "--factory", "IVF16,PQ2x4fs", "--target-recall", "0.9", store=root)
    assert out.returncode == 5, (out.stdout, out.stderr)  # refused
    assert "gate FAILED" in out.stdout and "recall gate failed" in out.stderr
    live = read_current(store)
    assert live is not None and live.snapshot_id == SID

    out = run("train", NEWER, "--factory", "IVF64,PQ7", store=root)
    assert out.returncode == 5 and "factory 'IVF64,PQ7'" in out.stderr
