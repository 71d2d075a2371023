"""The build DAG end to end through real Airflow (``airflow dags test``, SQLite):
on real photos, against the local store and against S3 (moto server over HTTP);
a failing recall gate leaves CURRENT where it was; a rerun is idempotent."""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.dags.airflow_env import AirflowEnv, run_state
from vsearch.snapshots import read_current, read_pointer, verify_objects
from vsearch.storage import LocalStore, ObjectStore
from vsearch.storage.s3 import S3Store

pytestmark = pytest.mark.slow
COCO = SHARED_DATA / "coco256-000.tar"
DAG = "vsearch_build_index"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of 96 real COCO photos (a source of the kind users point at)."""
    out = tmp_path_factory.mktemp("photos")
    with tarfile.open(COCO) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")][:96]
        for m in members:
            (out / Path(m.name).name).write_bytes(tar.extractfile(m).read())  # type: ignore[union-attr]
    return out


def conf(photos: Path, **overrides: object) -> dict[str, object]:
    return {
        "sources": [str(photos)],
        "partition_size": 40,
        "nshards": 2,
        "bytes_per_vector": 64,
        "target_recall": 0.95,
        **overrides,
    }


def checksums(store: ObjectStore) -> dict[str, str]:
    return {i.key: store.sha256(i.key)[0] for i in store.list("") if not i.key.startswith(".")}


def assert_published_and_verified(store: ObjectStore, snapshot_id: str) -> None:
    live = read_current(store)
    assert live is not None and live.snapshot_id == snapshot_id
    assert verify_objects(store, live) == []
    report = json.loads(store.get(f"indexes/{snapshot_id}/report.json"))
    assert report["gate"]["passed"] is True
    assert live.recall.image_to_image_at_10 is not None
    assert live.recall.image_to_image_at_10 >= 0.95
    assert live.ntotal == 96 and live.lineage.dag_id == DAG
    assert live.encoder.name == "efficientnet-lite0"


def test_local_store_build_gate_and_idempotent_rerun(
    airflow_env: AirflowEnv, photos: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    env = {"VSEARCH_STORE": str(store.root), "VSEARCH_DATA_DIR": str(tmp_path)}

    first = airflow_env.dags_test(DAG, "2026-02-01", conf(photos), env)
    assert run_state(first) == "success", first.stderr[-4000:]
    assert_published_and_verified(store, "20260201T000000Z")
    before = checksums(store)

    again = airflow_env.dags_test(DAG, "2026-02-01", conf(photos), env)
    assert run_state(again) == "success", again.stderr[-4000:]
    assert checksums(store) == before  # same keys, same bytes

    # A starved spec cannot reach the target: the gate fails the run, CURRENT stays.
    starved = airflow_env.dags_test(
        DAG, "2026-02-02", conf(photos, factory="IVF8,PQ2x4", target_recall=0.99), env
    )
    assert run_state(starved) == "failed"
    assert read_pointer(store)[0].snapshot_id == "20260201T000000Z"  # type: ignore[index]
    assert not store.exists("manifests/20260202T000000Z.json")


def test_s3_store_through_the_airflow_connection(
    airflow_env: AirflowEnv, photos: Path, s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = f"dag-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket, "vsearch", endpoint_url=s3_endpoint)
    store.client.create_bucket(Bucket=bucket)
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing-secret",
        "extra": {
            "store_url": f"s3://{bucket}/vsearch",
            "endpoint_url": s3_endpoint,
            "region_name": "us-east-1",
        },
    }
    env = {
        "AIRFLOW_CONN_VSEARCH_S3": json.dumps(connection),
        "VSEARCH_DATA_DIR": str(tmp_path),
        "VSEARCH_STORE": str(tmp_path / "must-not-be-used"),
    }
    run = airflow_env.dags_test(DAG, "2026-03-01", conf(photos, store_conn_id="vsearch_s3"), env)
    assert run_state(run) == "success", run.stderr[-4000:]
    assert_published_and_verified(store, "20260301T000000Z")
    assert not (tmp_path / "must-not-be-used").exists()
