#!/usr/bin/env bash
# Build every image the stack needs without an image registry (docker/smoke.sh calls this):
#
#   1. a minimal Debian bookworm base, from mmdebstrap piped into `docker import`;
#   2. the stand-ins for the third-party images (docker/standins/Dockerfile) on it;
#   3. vsearch's own two images (docker/Dockerfile, targets service and airflow) on the
#      python stand-in, installing from a wheelhouse of the pinned dependencies (pip
#      download on the host, served to the build over HTTP on the docker bridge), so that
#      no pip inside a container talks to an index over TLS.
#
# Needs: docker (engine running), mmdebstrap, python3; the host's pip index for the
# wheelhouse (docker/.wheelhouse, made once). Rerunnable: what exists is reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
wheelhouse=${WHEELHOUSE:-$root/docker/.wheelhouse}
python=${PYTHON:-$root/.venv/bin/python}
tag=${IMAGE_TAG:-0.1.0}
say() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if ! docker image inspect vsearch-standin/debian:bookworm >/dev/null 2>&1; then
    say "base: mmdebstrap bookworm (minbase) | docker import"
    mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm - \
        | docker import - vsearch-standin/debian:bookworm >/dev/null
fi

# async-timeout: redis needs it on Python < 3.11.3, which Debian's 3.11.2 is (the host's
# Python may be newer, and pip download resolves markers for the host).
if [ ! -f "$wheelhouse/.complete" ]; then
    say "wheelhouse: pip download of the pinned dependencies -> $wheelhouse"
    mkdir -p "$wheelhouse"
    "$python" docker/scripts/pyproject_deps.py pyproject.toml airflow > "$wheelhouse/requirements.txt"
    "$python" -m pip download -q -d "$wheelhouse" -c constraints.txt \
        -r "$wheelhouse/requirements.txt" setuptools wheel "moto[server]" \
        "async-timeout>=4.0.3" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    touch "$wheelhouse/.complete"
fi

# The wheelhouse over HTTP where build containers reach the host: the bridge's gateway.
gateway=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
if [ -z "$gateway" ]; then  # the default bridge often names no gateway: docker0's address
    gateway=$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)
fi
# A fixed port: it is part of the build arguments, so a new one would void the build cache.
port=${WHEELHOUSE_PORT:-38471}
"$python" -m http.server "$port" --bind "$gateway" --directory "$wheelhouse" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
pip_args=(--build-arg PIP_NO_INDEX=1 --build-arg "PIP_FIND_LINKS=http://$gateway:$port/"
          --build-arg "PIP_TRUSTED_HOST=$gateway")

build() {  # build TARGET TAG CONTEXT-DIR [ARGS...]: quiet, the log kept on failure
    local target=$1 image=$2 context=$3; shift 3
    local log; log=$(mktemp)
    local started=$SECONDS
    if ! docker build --quiet --target "$target" -t "$image" "$@" "$context" >"$log" 2>&1; then
        cat "$log" >&2; say "FAILED: $image"; exit 1
    fi
    say "$image ($((SECONDS - started)) s)"
    rm -f "$log"
}

# The python stand-in gets this machine's CPython 3.11 (without its site-packages): Debian's
# python3.11 is 3.11.2, older than what the pinned wheels require (>= 3.11.5).
python_home=$(python3.11 -c 'import sys; print(sys.base_prefix)')
standins=$(mktemp -d)
cp docker/standins/Dockerfile docker/standins/postgres-entrypoint.sh "$standins/"
mkdir -p "$standins/python-home"
tar -C "$python_home" --exclude='./lib/python3.11/site-packages/*' --exclude='./lib/python3.11/test' \
    --exclude='*/__pycache__' --exclude='./lib/python3.11/idlelib' -cf - . \
    | tar -C "$standins/python-home" -xf -
trap 'kill $server 2>/dev/null || true; rm -rf "$standins"' EXIT

for target in python postgres redis haproxy; do
    case $target in
        python) image=vsearch-standin/python:3.11 ;;
        postgres) image=vsearch-standin/postgres:15 ;;
        redis) image=vsearch-standin/redis:7.0 ;;
        haproxy) image=vsearch-standin/haproxy:2.6 ;;
    esac
    build "$target" "$image" "$standins"
done
build s3 vsearch-standin/s3:moto "$standins" "${pip_args[@]}"

# vsearch's images from the tracked files only (what a fresh clone has; the classic
# builder does not read docker/Dockerfile.dockerignore), sent as a tar context.
context=$(mktemp -d)
git ls-files -z pyproject.toml constraints.txt README.md vsearch service dags plugins \
    docker/scripts docker/Dockerfile | xargs -0 cp --parents -t "$context"
for target in service airflow; do
    build "$target" "vsearch/$target:$tag-cpu" "$context" -f "$context/docker/Dockerfile" \
        --build-arg PYTHON_IMAGE=vsearch-standin/python:3.11 "${pip_args[@]}"
done
rm -rf "$context"
say "done"
