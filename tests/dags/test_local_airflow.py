"""Airflow as a user runs it: ``vsearch airflow up`` (what ``make airflow`` starts: the API
server, the scheduler with the LocalExecutor, the DAG processor and the triggerer), a
build triggered through the REST API as the UI does, and a two-date backfill created
with the ``airflow`` CLI while it runs — on 5,000 real CIFAR-10 images, with a memory
budget that rules out exact search, so OPQ/IVF/PQ is trained and the recall gate runs.
Then the published snapshot answers an uploaded photo through ``vsearch serve``'s app.

Unlike ``airflow dags test``, this goes through pools, queues and the scheduler: a
task on a pool that does not exist is never scheduled, and a component signing task
tokens with another secret fails every task. Both happened to users before.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA
from tests.dags.local_airflow import DAG, LocalAirflow
from vsearch.catalog import list_snapshots, read_current
from vsearch.cli.service_process import running_service, settings_env
from vsearch.config import Settings
from vsearch.storage import LocalStore

pytestmark = pytest.mark.slow
N_IMAGES = 5000


def cifar_subset(out: Path, n: int) -> Path:
    """The first ``n`` samples of the CIFAR-10 test shard, as a webdataset tar of their own."""
    keys: set[str] = set()
    with tarfile.open(SHARED_DATA / "cifar10-test-000.tar") as src, tarfile.open(out, "w") as dst:
        for member in src:
            key = member.name.rsplit(".", 1)[0]
            if key not in keys and len(keys) == n:
                break
            keys.add(key)
            dst.addfile(member, src.extractfile(member))
    return out


def test_triggered_run_and_a_cli_backfill_build_and_publish(
    local_airflow: LocalAirflow, tmp_path: Path
) -> None:
    images = cifar_subset(tmp_path / "cifar-5000.tar", N_IMAGES)
    # 5,000 x 1280-d in 4 MiB: no exact, IVF-Flat or IVF-SQ8 index fits; OPQ+IVF+PQ does.
    conf = {
        "sources": [str(images)],
        "nshards": 2,
        "memory_floor_mb": 4,
        "encoder": "efficientnet-lite0?image_size=96",
    }  # 32-px photos: 96 px is plenty
    status, run = local_airflow.api("POST", f"/api/v2/dags/{DAG}/dagRuns",
                              {"logical_date": "2026-03-01T00:00:00Z", "conf": conf})  # fmt: skip
    assert status == 200, run
    args = ("backfill", "create", "--dag-id", DAG, "--from-date", "2026-02-01",
            "--to-date", "2026-02-02", "--dag-run-conf", json.dumps(conf))  # fmt: skip
    backfill = local_airflow.airflow_cli(*args)
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    wanted = {run["dag_run_id"], "backfill__2026-02-01T00:00:00+00:00",
              "backfill__2026-02-02T00:00:00+00:00"}  # fmt: skip

    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        runs = local_airflow.runs()
        states = {r: runs[r]["state"] for r in wanted if r in runs}
        for run_id, state in states.items():
            assert state != "failed", (run_id, local_airflow.failed_tasks(run_id))
        if len(states) == 3 and set(states.values()) == {"success"}:
            break
        time.sleep(5)
    else:
        raise AssertionError(f"runs did not finish: {states}")
    scheduled = [r for r in runs.values() if r["run_type"] == "scheduled"]
    assert all(r["state"] == "success" for r in scheduled)  # skipped: no VSEARCH_SOURCES

    settings = Settings.load(environ={}, data_dir=str(local_airflow.root / "data"))
    store = LocalStore(settings.store)
    assert {"20260201T000000Z", "20260202T000000Z", "20260301T000000Z"} <= set(
        list_snapshots(store)
    )
    live = read_current(store)  # the backfill of older dates did not move CURRENT back
    assert live is not None and live.snapshot_id == "20260301T000000Z"
    assert {"OPQ", "IVF", "PQ", "Refine"} <= set(re.split(r"[^A-Za-z]+", live.index.factory))
    assert live.recall.image_to_image_at_10 is not None
    assert live.recall.image_to_image_at_10 >= 0.95 and live.ntotal == N_IMAGES
    assert live.lineage.dag_id == DAG

    # The published snapshot answers an uploaded photo, with the encoder it was built with.
    with tarfile.open(images) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg"))
        photo = tar.extractfile(member).read()  # type: ignore[union-attr]
    with running_service(settings_env(settings)) as base:
        hits = upload(base, photo)
    assert hits[0]["metadata"]["key"] == f"cifar-5000/{member.name.rsplit('.', 1)[0]}"


def upload(base: str, photo: bytes) -> list[dict[str, Any]]:
    """POST /v1/search as ``curl -F image=@photo.jpg`` does (multipart form)."""
    boundary = "vsearch-test-boundary"
    body = io.BytesIO()
    body.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
               f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".encode())  # fmt: skip
    body.write(photo + f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        f"{base}/v1/search", data=body.getvalue(), method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        return list(json.loads(response.read())["hits"])
