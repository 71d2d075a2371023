"""The build DAG end to end through real Airflow (``airflow dags test``, SQLite):
on real photos, against the local store and against S3 (moto server over HTTP);
a failing recall gate leaves CURRENT where it was; a rerun is idempotent; the
``vsearch_current_snapshot`` Asset gets one event per move of CURRENT and none for a
run that did not move it. Run outcomes are read from Airflow's metadata DB."""

from __future__ import annotations

import json
import tarfile
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.dags.airflow_env import AirflowEnv, DagTestRun
from vsearch.catalog import read_current, read_pointer, verify_objects
from vsearch.delta import DeltaWrite, open_delta_log
from vsearch.embedding.partitions import list_partitions, read_partition
from vsearch.storage import LocalStore, ObjectStore
from vsearch.storage.s3 import S3Store

pytestmark = pytest.mark.slow
COCO = SHARED_DATA / "coco256-000.tar"
DAG = "vsearch_build_index"
ASSET = "vsearch_current_snapshot"


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


def assert_tasks(run: DagTestRun, skipped: Collection[str] = ()) -> None:
    """The run succeeded: every task instance succeeded at its first try, but ``skipped``."""
    assert run.state == "success", run.log[-4000:]
    assert run.tasks
    for ti in run.tasks:
        assert ti.state == ("skipped" if ti.task_id in skipped else "success"), ti
        assert ti.try_number == 1, ti


def assert_announced(airflow_env: AirflowEnv, run: DagTestRun, snapshot_id: str) -> None:
    """CURRENT moved to ``snapshot_id``: exactly one Asset event, from the announce task."""
    (event,) = airflow_env.asset_events(ASSET, run.run_id)
    assert event.source_task_id == "announce_current"
    assert event.extra == {"snapshot_id": snapshot_id, "manifest": f"manifests/{snapshot_id}.json"}


@dataclass
class Built:
    store: LocalStore
    env: dict[str, str]  # what the run was given
    first: DagTestRun


@pytest.fixture(scope="module")
def built(airflow_env: AirflowEnv, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A local store with the build DAG's first snapshot, and the env that ran it."""
    root = tmp_path_factory.mktemp("local")
    store = LocalStore(root / "store")
    env = {
        "VSEARCH_STORE": str(store.root),
        "VSEARCH_DATA_DIR": str(root),
        "VSEARCH_DELTA_LOG": f"sqlite:///{root}/delta.sqlite3",
    }
    first = airflow_env.dags_test(DAG, "2026-02-01", conf(photos), env)
    assert first.state == "success", first.log[-4000:]
    return Built(store, env, first)


def test_local_store_build_gate_and_idempotent_rerun(
    airflow_env: AirflowEnv, photos: Path, built: Built
) -> None:
    store, env = built.store, built.env
    assert_tasks(built.first)
    assert_published_and_verified(store, "20260201T000000Z")
    assert_announced(airflow_env, built.first, "20260201T000000Z")
    before = checksums(store)

    # The rerun publishes the live snapshot again: CURRENT does not move, so the
    # announce task skips and nothing scheduled on the Asset runs for it.
    again = airflow_env.dags_test(DAG, "2026-02-01", conf(photos), env)
    assert_tasks(again, skipped={"announce_current"})
    assert checksums(store) == before  # same keys, same bytes
    assert airflow_env.asset_events(ASSET, again.run_id) == []

    # A starved spec (one 4-bit code for 1280 dims) trains but cannot reach the target:
    # the gate fails the run at once (no retries: it is deterministic), CURRENT stays.
    starved = airflow_env.dags_test(
        DAG, "2026-02-02", conf(photos, factory="IVF4,PQ1x4", target_recall=0.99), env
    )
    assert starved.state == "failed"
    assert "recall gate failed" in starved.log and "AirflowFailException" in starved.log
    gate = starved.task("validate_snapshot")
    assert (gate.state, gate.try_number) == ("failed", 1), gate  # failed once, not retried
    states = starved.states()
    assert states.pop("validate_snapshot") == {"failed"}
    assert states.pop("publish_snapshot") == {"upstream_failed"}  # never ran
    assert states.pop("announce_current") == {"upstream_failed"}
    assert all(s == {"success"} for s in states.values()), states
    assert airflow_env.asset_events(ASSET, starved.run_id) == []
    assert read_pointer(store)[0].snapshot_id == "20260201T000000Z"  # type: ignore[index]
    assert not store.exists("manifests/20260202T000000Z.json")

    # A backfill of an older date records its snapshot but leaves CURRENT where it is:
    # publish succeeds, announce skips, the Asset gets no event.
    backfill = airflow_env.dags_test(DAG, "2026-01-31", conf(photos), env)
    assert_tasks(backfill, skipped={"announce_current"})
    assert store.exists("manifests/20260131T000000Z.json")
    assert read_pointer(store)[0].snapshot_id == "20260201T000000Z"  # type: ignore[index]
    assert airflow_env.asset_events(ASSET, backfill.run_id) == []


def test_compaction_folds_upserts_and_deletes(airflow_env: AirflowEnv, built: Built) -> None:
    store, env = built.store, built.env
    base = read_current(store)
    assert base is not None
    _, ids, _ = read_partition(store, base.snapshot_id, 0)
    deleted, replaced = int(ids[0]), int(ids[1])
    rng = np.random.default_rng(7)
    xb = rng.standard_normal((2, base.encoder.dim)).astype("float32")
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    log = open_delta_log(env["VSEARCH_DELTA_LOG"])
    log.append(
        [
            DeltaWrite("upsert", 4242, xb[0], {"key": "new/4242"}),
            DeltaWrite("delete", deleted),
            DeltaWrite("upsert", replaced, xb[1], {"key": "replaced"}),
        ]
    )
    watermark = log.last_id()

    idle = airflow_env.dags_test(
        "vsearch_compact", "2026-02-01T06:00:00", {"min_entries": 10}, env
    )  # below the threshold: skipped
    assert idle.state == "success", idle.log[-4000:]
    idle_states = idle.states()
    assert idle_states.pop("check_delta") == {"success"}
    assert idle_states and all(s == {"skipped"} for s in idle_states.values()), idle_states
    assert read_current(store) == base
    assert airflow_env.asset_events(ASSET, idle.run_id) == []

    run = airflow_env.dags_test("vsearch_compact", "2026-02-01T07:00:00", {"min_entries": 1}, env)
    assert_tasks(run)
    live = read_current(store)
    assert live is not None and live.snapshot_id == "20260201T070000Z-c"
    assert_announced(airflow_env, run, "20260201T070000Z-c")
    assert live.delta_watermark == watermark and live.previous_snapshot_id == base.snapshot_id
    assert verify_objects(store, live) == []
    folded: set[int] = set()
    for i in list_partitions(store, live.snapshot_id):
        folded |= {int(x) for x in read_partition(store, live.snapshot_id, i)[1]}
    assert 4242 in folded and replaced in folded and deleted not in folded
    assert live.ntotal == base.ntotal  # +1 new, -1 deleted, 1 replaced in place
    # The trained index was reused, not retrained: same bytes under the new snapshot.
    assert live.index.trained is not None and base.index.trained is not None
    assert live.index.trained.sha256 == base.index.trained.sha256
    assert live.index.trained.uri != base.index.trained.uri


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
    assert_tasks(run)
    assert_published_and_verified(store, "20260301T000000Z")
    assert_announced(airflow_env, run, "20260301T000000Z")
    assert not (tmp_path / "must-not-be-used").exists()
