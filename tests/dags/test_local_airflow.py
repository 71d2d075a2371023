"""Airflow as a user runs it: ``make airflow`` (its own PostgreSQL, the API server, the
scheduler with the LocalExecutor, the DAG processor and the triggerer), a build
triggered through the REST API with a token, as the README shows, and backfills created
while the scheduler works — with the ``airflow`` CLI (set up by ``vsearch airflow env``),
the REST API and ``vsearch airflow backfill`` — on 5,000 real CIFAR-10 images, with a
memory budget that rules out exact search, so OPQ/IVF/PQ is trained and the recall gate
runs. Then the published snapshot answers an uploaded photo through ``vsearch serve``'s
app, and one SIGTERM (the session fixture's teardown) or one Ctrl-C in a terminal stops
every part of it.

Unlike ``airflow dags test``, this goes through pools, queues and the scheduler: a
task on a pool that does not exist is never scheduled, a component signing task
tokens with another secret fails every task, and a backfill created on SQLite while
the scheduler writes can fail with "database is locked". All happened to users before.
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
from vsearch.cli.service_process import http_json, running_service, settings_env
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


def test_triggered_run_and_backfills_build_and_publish(
    local_airflow: LocalAirflow, tmp_path: Path
) -> None:
    af = local_airflow
    assert (af.home / "airflow.cfg").exists()  # VSEARCH_DATA_DIR, not the Makefile's default
    assert af.home.parent == af.root / "data" and af.exports()["AIRFLOW_HOME"] == str(af.home)
    # The API server listens on loopback only, and nothing else of it listens at all.
    assert listening_ports(af) == [("127.0.0.1", af.port)]
    images = cifar_subset(tmp_path / "cifar-5000.tar", N_IMAGES)
    # 5,000 x 1280-d in 4 MiB: no exact, IVF-Flat or IVF-SQ8 index fits; OPQ+IVF+PQ does.
    conf = {
        "sources": [str(images)],
        "nshards": 2,
        "memory_floor_mb": 4,
        "encoder": "efficientnet-lite0?image_size=96",
    }  # 32-px photos: 96 px is plenty
    small = {**conf, "sources": [str(cifar_subset(tmp_path / "cifar-300.tar", 300))]}
    del small["memory_floor_mb"]
    # The README's REST trigger: a token from `vsearch airflow token`, then the run.
    token = af.vsearch("airflow", "token")
    assert token.returncode == 0, token.stderr
    status, run = http_json(
        "POST", f"{af.base}/api/v2/dags/{DAG}/dagRuns",
        {"logical_date": "2026-03-01T00:00:00Z", "conf": conf},
        {"Authorization": f"Bearer {token.stdout.strip()}"},
    )  # fmt: skip
    assert status == 200, run

    # A backfill from the CLI while the scheduler runs the triggered run.
    args = ("backfill", "create", "--dag-id", DAG, "--from-date", "2026-02-01",
            "--to-date", "2026-02-01", "--dag-run-conf", json.dumps(conf))  # fmt: skip
    cli = af.airflow_cli(*args)
    assert cli.returncode == 0, cli.stderr[-3000:]
    first = backfill_of(af, "2026-02-01")
    assert first["completed_at"] is None  # 5,000 photos: still running for a while

    # Airflow runs one backfill per DAG: a second one is refused, and said so clearly.
    request = {"dag_id": DAG, "from_date": "2026-01-01T00:00:00Z",
               "to_date": "2026-01-01T00:00:00Z", "dag_run_conf": small}  # fmt: skip
    status, refused = af.api("POST", "/api/v2/backfills", request)
    assert status == 409, refused
    second = af.vsearch("airflow", "backfill", "2026-01-01", "2026-01-01",
                        "--conf", json.dumps(small))  # fmt: skip
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"backfill {first['id']} (2026-02-01 to 2026-02-01)" in second.stderr
    assert "vsearch airflow backfill --cancel" in second.stderr
    assert "Traceback" not in second.stderr

    wanted = {run["dag_run_id"], "backfill__2026-02-01T00:00:00+00:00"}
    states = af.wait_runs(wanted)
    for run_id, state in states.items():
        assert state == "success", (run_id, af.failed_tasks(run_id))
    wait_backfill_done(af, "2026-02-01")  # marked complete a moment after its last run

    # Once it is done, a backfill through the REST API, then one through vsearch's command.
    status, body = af.api("POST", "/api/v2/backfills", request)
    assert status == 200, body
    assert af.wait_runs({"backfill__2026-01-01T00:00:00+00:00"}) == {
        "backfill__2026-01-01T00:00:00+00:00": "success"
    }, af.failed_tasks("backfill__2026-01-01T00:00:00+00:00")
    wait_backfill_done(af, "2026-01-01")
    made = af.vsearch(
        "airflow", "backfill", "2026-01-02", "2026-01-02", "--conf", json.dumps(small)
    )
    assert made.returncode == 0 and "backfill" in made.stdout, made.stderr
    cancelled = af.vsearch("airflow", "backfill", "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert backfill_of(af, "2026-01-02")["completed_at"] is not None

    runs = af.runs()
    assert not [r for r, v in runs.items() if v["state"] == "failed" and "2026-01-02" not in r]
    scheduled = [r for r in runs.values() if r["run_type"] == "scheduled"]
    assert all(r["state"] == "success" for r in scheduled)  # skipped: no VSEARCH_SOURCES

    settings = Settings.load(environ={}, data_dir=str(af.root / "data"))
    store = LocalStore(settings.store)
    assert {"20260101T000000Z", "20260201T000000Z", "20260301T000000Z"} <= set(
        list_snapshots(store)
    )
    live = read_current(store)  # the backfills of older dates did not move CURRENT back
    assert live is not None and live.snapshot_id == "20260301T000000Z"
    assert {"OPQ", "IVF", "PQ", "Refine"} <= set(re.split(r"[^A-Za-z]+", live.index.factory))
    assert live.recall.image_to_image_at_10 is not None
    assert live.recall.image_to_image_at_10 >= 0.95 and live.ntotal == N_IMAGES
    assert live.lineage.dag_id == DAG

    # One Asset event per move of CURRENT, none for a run that did not move it (the
    # 2026-01-01 backfill ran after 2026-03-01 was live).
    moved = {r for r in wanted | {"backfill__2026-01-01T00:00:00+00:00"}
             if task_state(af, r, "announce_current") == "success"}  # fmt: skip
    assert run["dag_run_id"] in moved and "backfill__2026-01-01T00:00:00+00:00" not in moved
    assert sorted(e["source_run_id"] for e in asset_events(af)) == sorted(moved)

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


def listening_ports(af: LocalAirflow) -> list[tuple[str, int]]:
    """The TCP sockets in LISTEN state of the local Airflow's processes."""
    import psutil

    pids = set(af.processes())
    found = set()
    for conn in psutil.net_connections("inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.add((conn.laddr.ip, conn.laddr.port))
    return sorted(found)


def backfill_of(af: LocalAirflow, date: str) -> dict[str, Any]:
    status, body = af.api("GET", f"/api/v2/backfills?dag_id={DAG}&limit=100")
    assert status == 200, body
    found = [b for b in body["backfills"] if b["from_date"].startswith(date)]
    assert found, body
    return dict(found[-1])


def wait_backfill_done(af: LocalAirflow, date: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while backfill_of(af, date)["completed_at"] is None:
        assert time.monotonic() < deadline, f"the backfill of {date} never completed"
        time.sleep(1)


def task_state(af: LocalAirflow, run_id: str, task_id: str) -> str | None:
    states = {t["task_id"]: t["state"] for t in af.task_instances(run_id)}
    return states.get(task_id)


def asset_events(af: LocalAirflow) -> list[dict[str, Any]]:
    status, body = af.api("GET", "/api/v2/assets?name_pattern=vsearch_current_snapshot")
    assert status == 200 and len(body["assets"]) == 1, body
    asset_id = body["assets"][0]["id"]
    status, body = af.api("GET", f"/api/v2/assets/events?asset_id={asset_id}&limit=100")
    assert status == 200, body
    return list(body["asset_events"])


def test_one_ctrl_c_in_its_terminal_stops_every_part(tmp_path: Path) -> None:
    """``make airflow`` in a terminal of its own (a pty); one Ctrl-C typed there."""
    af = LocalAirflow(tmp_path, terminal=True)
    try:
        af.wait_ready()
        assert len(af.processes()) >= 6  # vsearch, 4 components, PostgreSQL
    except BaseException:
        af.stop()
        raise
    seconds = af.stop()
    assert seconds < 30, f"one Ctrl-C took {seconds:.0f} s to stop everything"
    assert "vsearch: Airflow stopped" in af.log.read_text(errors="replace")
