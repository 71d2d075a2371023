#!/usr/bin/env bash
# The main job end to end on embedded defaults (local directory store, SQLite for
# Airflow and the delta log, no servers to set up):
#   sample images -> Airflow DAG run (embed, train, shards, recall gate, publish)
#   -> query service on the published snapshot -> image query, upsert, find, delete.
# Usage: scripts/demo.sh [DEMO_DIR]   (make demo runs it on a fresh ./demo-data)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=$(realpath -m "${1:-demo-data}")
py=$repo/.venv/bin/python
mkdir -p "$root"

export VSEARCH_DATA_DIR=$root
export VSEARCH_QUERY_ENCODER=efficientnet-lite0
export AIRFLOW_HOME=$root/airflow
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$repo/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export PYTHONPATH=$repo/plugins:$repo${PYTHONPATH:+:$PYTHONPATH}

step() { printf '\n== %s\n' "$*"; }

step "1/4 sample images: 200 generated pictures in 8 classes (no download, no dataset) -> $root/images"
"$py" - "$root/images" <<'PY'
import sys
from vsearch.sources.samples import write_sample_images
paths = write_sample_images(sys.argv[1], 200)
print(f"wrote {len(paths)} JPEGs, e.g. {paths[0].name}")
PY

step "2/4 Airflow: SQLite metadata DB in $AIRFLOW_HOME"
.venv/bin/airflow db migrate >"$root/airflow-migrate.log" 2>&1 || { tail -40 "$root/airflow-migrate.log"; exit 1; }
echo "migrated (log: $root/airflow-migrate.log)"

step "3/4 Airflow: airflow dags test vsearch_build_index 2026-01-01 (the build DAG, every task for real)"
conf="{\"sources\": [\"$root/images\"], \"partition_size\": 100, \"nshards\": 2}"
if ! .venv/bin/airflow dags test vsearch_build_index 2026-01-01 -c "$conf" >"$root/dag-run.log" 2>&1; then
  tail -60 "$root/dag-run.log"; exit 1
fi
state=$(grep -o 'DagRun Finished:.*' "$root/dag-run.log" | sed -n 's/.*state=\([a-z_]*\).*/\1/p' | tail -1)
grep -o '\[DAG TEST\] end task task_id=[a-z_]* map_index=-\?[0-9]*' "$root/dag-run.log" \
  | sed 's/\[DAG TEST\] end task /  done: /'
echo "run state: $state (full log: $root/dag-run.log)"
[ "$state" = success ] || { tail -60 "$root/dag-run.log"; exit 1; }
.venv/bin/vsearch manifest list

step "4/4 query service on the published snapshot: image query, upsert, search, delete"
image=$(find "$root/images" -name '*.jpg' | sort | sed -n 1p)  # sed reads all: no SIGPIPE
echo "query image: ${image#"$root"/}"
"$py" -m service.demo_client --gunicorn --image "$image"

printf '\nDone. Store: %s/store  ·  inspect: .venv/bin/vsearch --data-dir %s manifest show\n' "$root" "$root"
