"""Retries as the real scheduler does them (``vsearch airflow up``, the shared
``local_airflow``): a transient fault (the S3 endpoint down, the image servers of a URL
list unreachable) is retried and the run succeeds once the store or the images are back;
a permanent one (a source that does not exist) fails
the task at once, on its first try, with the reason in one line of its log.

The local Airflow retries after VSEARCH_RETRY_DELAY_S=5 seconds (local_airflow.py)."""

from __future__ import annotations

import csv
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.dags.local_airflow import DAG, LocalAirflow
from tests.embedding.image_server import image_server
from tests.fixtures.photos import coco_photos
from tests.servers import aws_test_credentials, free_port, moto_server
from vsearch.catalog import read_current
from vsearch.storage import LocalStore
from vsearch.storage.s3 import S3Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of 48 real COCO photos."""
    out = tmp_path_factory.mktemp("photos")
    for key, jpeg in list(coco_photos().items())[:48]:
        (out / f"{Path(key).name}.jpg").write_bytes(jpeg)
    return out


def conf(sources: list[str], **overrides: object) -> dict[str, object]:
    return {
        "sources": sources,
        "partition_size": 40,
        "nshards": 1,
        "bytes_per_vector": 64,
        "target_recall": 0.9,
        **overrides,
    }


def trigger(airflow: LocalAirflow, logical_date: str, run_conf: dict[str, object]) -> str:
    status, run = airflow.api(
        "POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": logical_date, "conf": run_conf}
    )
    assert status == 200, run
    return str(run["dag_run_id"])


def find_task(
    airflow: LocalAirflow, run_id: str, task_id: str, map_index: int = -1
) -> dict[str, Any] | None:
    """The task instance (of a mapped task: the one at ``map_index``), None while a mapped
    task is not expanded yet."""
    found = [t for t in airflow.task_instances(run_id)
             if (t["task_id"], t["map_index"]) == (task_id, map_index)]  # fmt: skip
    assert len(found) <= 1, found
    return found[0] if found else None


def task(airflow: LocalAirflow, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    ti = find_task(airflow, run_id, task_id, map_index)
    assert ti is not None, airflow.failed_tasks(run_id)
    return ti


def wait_task_state(
    airflow: LocalAirflow,
    run_id: str,
    task_id: str,
    states: set[str],
    timeout: float = 300,
    map_index: int = -1,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    ti: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        ti = find_task(airflow, run_id, task_id, map_index)
        if ti is not None and ti["state"] in states:
            return ti
        run_state = airflow.runs()[run_id]["state"]
        assert run_state not in ("success", "failed"), (
            f"the run ended {run_state} with {task_id}[{map_index}] "
            f"{ti and (ti['state'], ti['try_number'])}: {airflow.failed_tasks(run_id)}"
        )
        time.sleep(0.3)
    raise AssertionError(f"{task_id}[{map_index}] never reached {states}: {ti}")


def task_log(
    airflow: LocalAirflow, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> str:
    path = (f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
            f"?map_index={map_index}")  # fmt: skip
    status, body = airflow.api("GET", path)
    assert status == 200, body
    return json.dumps(body["content"])


def test_store_down_is_retried_and_the_run_succeeds_once_it_is_back(
    local_airflow: LocalAirflow, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens here until the first try has failed
    endpoint = f"http://127.0.0.1:{port}"
    bucket = f"retry-{uuid.uuid4().hex[:10]}"
    conn_id = f"vsearch_retry_{uuid.uuid4().hex[:6]}"
    extra = {"store_url": f"s3://{bucket}/vsearch", "endpoint_url": endpoint,
             "region_name": "us-east-1"}  # fmt: skip
    status, body = local_airflow.api("POST", "/api/v2/connections", {
        "connection_id": conn_id, "conn_type": "aws", "login": "testing",
        "password": "testing-secret", "extra": json.dumps(extra),
    })  # fmt: skip
    assert status == 201, body
    try:
        run_id = trigger(local_airflow, "2026-05-01T00:00:00Z",
                         conf([str(photos)], store_conn_id=conn_id))  # fmt: skip
        # plan_partitions is the first task to touch the store: its first try fails
        # on the refused connection, and Airflow schedules a retry.
        failed = wait_task_state(local_airflow, run_id, "plan_partitions", {"up_for_retry"})
        assert failed["try_number"] == 1, failed
        with moto_server(tmp_path, port):
            for name, value in aws_test_credentials().items():
                monkeypatch.setenv(name, value)
            store = S3Store(bucket, "vsearch", endpoint_url=endpoint)
            store.client.create_bucket(Bucket=bucket)
            states = local_airflow.wait_runs({run_id}, timeout=600)
            assert states == {run_id: "success"}, local_airflow.failed_tasks(run_id)
            retried = task(local_airflow, run_id, "plan_partitions")
            assert (retried["state"], retried["try_number"]) == ("success", 2), retried
            assert "EndpointConnectionError" in task_log(local_airflow, run_id,
                                                         "plan_partitions", 1)  # fmt: skip
            live = read_current(store)
            assert live is not None and live.snapshot_id == "20260501T000000Z"
            assert live.ntotal == 48
    finally:
        local_airflow.api("DELETE", f"/api/v2/connections/{conn_id}")


def test_images_unreachable_are_fetched_again_and_the_run_succeeds_once_they_are_back(
    local_airflow: LocalAirflow, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here until the fetch's first try has failed
    urls = tmp_path / "photos.csv"
    with open(urls, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["url", "key"])
        writer.writeheader()
        writer.writerows({"url": f"http://127.0.0.1:{port}/ok/{i}.jpg", "key": f"photo{i}"}
                         for i in range(12))  # fmt: skip
    # A store of this test's own (a local directory, through a connection), so that its
    # snapshot does not move the default store's CURRENT, which other tests assert on.
    store_dir = tmp_path / "store"
    conn_id = f"vsearch_fetch_{uuid.uuid4().hex[:6]}"
    status, body = local_airflow.api("POST", "/api/v2/connections", {
        "connection_id": conn_id, "conn_type": "aws",
        "extra": json.dumps({"store_url": str(store_dir)}),
    })  # fmt: skip
    assert status == 201, body
    try:
        run_id = trigger(local_airflow, "2026-05-03T00:00:00Z",
                         conf([str(urls)], store_conn_id=conn_id))  # fmt: skip
        # One shard of 12 URLs: fetch_partition[0]. Every download is refused, so the shard
        # is not stored and its first try fails with FetchUnavailable; Airflow retries it.
        failed = wait_task_state(local_airflow, run_id, "fetch_partition", {"up_for_retry"},
                                 map_index=0)  # fmt: skip
        assert failed["try_number"] == 1, failed
        with image_server(port) as (_, hits):
            states = local_airflow.wait_runs({run_id}, timeout=600)
            assert states == {run_id: "success"}, local_airflow.failed_tasks(run_id)
            assert sorted(hits) == sorted(f"/ok/{i}.jpg" for i in range(12)), hits
        retried = task(local_airflow, run_id, "fetch_partition", map_index=0)
        assert (retried["state"], retried["try_number"]) == ("success", 2), retried
        log = task_log(local_airflow, run_id, "fetch_partition", 1, map_index=0)
        assert "FetchUnavailable" in log and "connection-error" in log, log[-3000:]
        live = read_current(LocalStore(store_dir))
        assert live is not None and live.snapshot_id == "20260503T000000Z"
        assert live.ntotal == 12
    finally:
        local_airflow.api("DELETE", f"/api/v2/connections/{conn_id}")


def test_a_missing_source_fails_at_once_in_one_line(
    local_airflow: LocalAirflow, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-photos"
    run_id = trigger(local_airflow, "2026-05-02T00:00:00Z", conf([str(missing)]))
    assert local_airflow.wait_runs({run_id}, timeout=300) == {run_id: "failed"}
    plan = task(local_airflow, run_id, "plan_partitions")
    # Failed on its first try, never up_for_retry: a second try could only fail the same way.
    assert (plan["state"], plan["try_number"]) == ("failed", 1), plan
    log = task_log(local_airflow, run_id, "plan_partitions", 1)
    assert f"SourceError: {str(missing)!r}" in log or f"SourceError: {missing}" in log, log[-3000:]
