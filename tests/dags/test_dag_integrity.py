"""DAG integrity: the DagBag imports cleanly, every DAG has tags and retries, each
DAG's task graph matches the one written here, only the announce task carries the
Asset, and DAG files stay cheap to parse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.dags.airflow_env import ROOT, AirflowEnv

EXPECTED_GRAPHS = {
    "vsearch_build_index": {
        "plan_partitions": ["fetch_partition"],
        "fetch_partition": ["embed_partition"],
        "embed_partition": ["train_index"],
        "train_index": ["plan_shards"],
        "plan_shards": ["build_shard"],
        "build_shard": ["validate_snapshot"],
        "validate_snapshot": ["publish_snapshot"],
        "publish_snapshot": ["announce_current"],
        "announce_current": [],
    },
    "vsearch_compact": {
        "check_delta": ["fold_delta"],
        "fold_delta": ["plan_shards"],
        "plan_shards": ["build_shard"],
        "build_shard": ["validate_snapshot"],
        "validate_snapshot": ["publish_snapshot"],
        "publish_snapshot": ["announce_current"],
        "announce_current": [],
    },
}

_DAGBAG_PROBE = """
import json, sys
sys.path.insert(0, {plugins!r})
from airflow.dag_processing.dagbag import BundleDagBag
# As the DAG processor parses a bundle: its folder on sys.path, .airflowignore applied.
bag = BundleDagBag(dag_folder={dags!r}, bundle_path={dags!r})
out = {{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": {{}},
       "files": sorted({{d.fileloc.rsplit("/", 1)[-1] for d in bag.dags.values()}})}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {{
        "tags": sorted(dag.tags),
        "graph": {{t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}},
        "retries": {{t.task_id: t.retries for t in dag.tasks}},
        "outlets": {{t.task_id: [type(o).__name__ + ":" + o.name for o in t.outlets]
                     for t in dag.tasks if t.outlets}},
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "params": sorted(dag.params.keys()),
    }}
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def dagbag(airflow_env: AirflowEnv) -> dict[str, object]:
    code = _DAGBAG_PROBE.format(plugins=str(ROOT / "plugins"), dags=str(ROOT / "dags"))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("JSON"))
    return dict(json.loads(line[4:]))


def test_dagbag_imports_without_errors(dagbag: dict[str, object]) -> None:
    assert dagbag["errors"] == {}
    assert set(dagbag["dags"]) == set(EXPECTED_GRAPHS)  # type: ignore[arg-type]
    assert set(dagbag["files"]) == {"vsearch_build_index.py", "vsearch_compact.py"}  # type: ignore[arg-type]


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_GRAPHS))
def test_graph_tags_retries(dagbag: dict[str, object], dag_id: str) -> None:
    dag = dagbag["dags"][dag_id]  # type: ignore[index]
    assert dag["graph"] == EXPECTED_GRAPHS[dag_id]
    assert dag["tags"] and "vsearch" in dag["tags"]
    assert all(r >= 2 for r in dag["retries"].values()), dag["retries"]
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_GRAPHS))
def test_only_the_announce_task_carries_the_asset(dagbag: dict[str, object], dag_id: str) -> None:
    """Airflow emits an event for every successful task with an outlet: publish has none
    (it may succeed without moving CURRENT); announce_current, which skips then, has it."""
    dag = dagbag["dags"][dag_id]  # type: ignore[index]
    assert dag["outlets"] == {"announce_current": ["Asset:vsearch_current_snapshot"]}


@pytest.mark.parametrize("dag_file", ["vsearch_build_index.py", "vsearch_compact.py"])
def test_dag_file_is_cheap_to_import(airflow_env: AirflowEnv, dag_file: str) -> None:
    """Parsing runs every few seconds in the dag-processor: no torch/faiss/boto3, < 1 s."""
    code = f"""
import importlib.util, json, sys, time
sys.path.insert(0, {str(ROOT / "plugins")!r})
sys.path.append({str(ROOT / "dags")!r})  # the bundle path, as Airflow's parser sets it
import airflow.sdk  # Airflow's own import cost is not the DAG file's
before = set(sys.modules)
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", {str(ROOT / "dags" / dag_file)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
elapsed = time.perf_counter() - start
heavy = sorted(m for m in set(sys.modules) - before
               if m.split(".")[0] in ("torch", "faiss", "transformers", "numpy", "boto3", "PIL"))
print("JSON" + json.dumps({{"elapsed": elapsed, "heavy": heavy}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("JSON"))[4:])
    assert result["heavy"] == []
    assert result["elapsed"] < 1.0


@pytest.mark.parametrize(("value", "seconds"), [(None, 60.0), ("2.5", 2.5)])
def test_retry_delay_is_a_setting(
    airflow_env: AirflowEnv, value: str | None, seconds: float
) -> None:
    """VSEARCH_RETRY_DELAY_S sets the delay before a task's first retry (default a minute),
    as the DAG processor and the task processes parse it from the same environment."""
    env = {k: v for k, v in airflow_env.env.items() if k != "VSEARCH_RETRY_DELAY_S"}
    if value is not None:
        env["VSEARCH_RETRY_DELAY_S"] = value
    code = _DAGBAG_PROBE.replace('"retries": {{t.task_id: t.retries for t in dag.tasks}},',
                                 '"retries": {{t.task_id: t.retry_delay.total_seconds() '
                                 'for t in dag.tasks}},')  # fmt: skip
    code = code.format(plugins=str(ROOT / "plugins"), dags=str(ROOT / "dags"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("JSON"))[4:])
    assert found["errors"] == {}
    for dag in found["dags"].values():
        assert set(dag["retries"].values()) == {seconds}, dag["retries"]
