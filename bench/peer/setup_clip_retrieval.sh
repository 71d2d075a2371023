#!/usr/bin/env bash
# Peer baseline venv for clip-retrieval's "clip back" (bench/peer/clip_back_serve.py).
#
#   bash bench/peer/setup_clip_retrieval.sh          # idempotent: skips when the stamp exists
#   FORCE=1 bash bench/peer/setup_clip_retrieval.sh  # rebuild from scratch
#
# Venv: .bench-venvs/clip-retrieval (gitignore .bench-venvs/). CPU only.
# clip-retrieval goes in with --no-deps: its declared deps (img2dataset, wandb,
# sentence-transformers, open-clip-torch, all_clip, autofaiss, ...) are for
# inference/indexing, not for serving. What is installed is exactly what
# clip_retrieval/clip_back.py imports when it serves (clip_back_serve.py skips
# clip_retrieval/__init__.py, which would import the whole toolkit, and stubs
# the CLIP model), every package pinned.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${CLIP_RETRIEVAL_VENV:-$ROOT/.bench-venvs/clip-retrieval}"
CLIP_RETRIEVAL_VERSION=2.45.0
STAMP="$VENV/.stamp-clip-retrieval-$CLIP_RETRIEVAL_VERSION"

if [[ -f "$STAMP" && -z "${FORCE:-}" ]]; then
    echo "clip-retrieval peer venv ready: $VENV (stamp $STAMP; FORCE=1 to rebuild)"
    exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

# Every package in the venv, pinned (resolved 2.45.0 / python 3.11 / CPU).
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
cat >"$CONSTRAINTS" <<'PINS'
torch==2.13.0
filelock==4.3.2
fsspec==2026.9.0
Jinja2==3.1.6
MarkupSafe==3.0.4
mpmath==1.3.0
networkx==3.6.1
sympy==1.14.0
typing_extensions==4.16.0
# setuptools <81: clip back's add_static_endpoints imports pkg_resources,
# which setuptools 81+ no longer ships (torch alone would pull the newest).
setuptools==80.9.0
clip-retrieval==2.45.0
numpy==1.26.4
faiss-cpu==1.15.1
packaging==26.4
Flask==3.1.3
Werkzeug==3.1.9
blinker==1.9.0
click==8.5.1
itsdangerous==2.2.0
Flask-RESTful==0.3.10
aniso8601==10.0.1
pytz==2026.6
six==1.17.0
Flask-Cors==4.0.2
pandas==2.3.3
python-dateutil==4.0.0
tzdata==2026.6
pyarrow==15.0.2
h5py==3.16.0
prometheus_client==0.26.0
fire==0.5.0
termcolor==3.3.0
tqdm==4.70.1
pillow==13.0.0
PINS

# 1. torch first and alone, from the local CPU wheel only (--no-index: never
#    the multi-GB CUDA build from PyPI), then its small pure-python deps.
#    clip back needs torch only because KnnService.compute_query does
#    `import torch` on every query, and load_clip_index calls torch.cuda.
"${PIP[@]}" --no-index --no-deps torch==2.13.0
"${PIP[@]}" -c "$CONSTRAINTS" torch==2.13.0 setuptools
# 2. clip-retrieval itself, without its (inference/indexing) dependencies.
"${PIP[@]}" --no-deps -c "$CONSTRAINTS" clip-retrieval=="$CLIP_RETRIEVAL_VERSION"
# 3. what clip_back.py imports to serve (its own version ranges, pinned).
"${PIP[@]}" -c "$CONSTRAINTS" \
    numpy faiss-cpu Flask Flask-RESTful Flask-Cors pandas pyarrow h5py \
    prometheus_client fire tqdm pillow fsspec setuptools

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import faiss, flask, flask_cors, flask_restful, fsspec, h5py, numpy, pandas, pkg_resources  # noqa
import PIL, prometheus_client, pyarrow, fire, tqdm, torch  # noqa
assert "+cpu" in torch.__version__ or not torch.version.cuda, torch.__version__
for name in ("clip-retrieval", "torch", "faiss-cpu", "numpy", "Flask", "Werkzeug", "pandas", "pyarrow"):
    print(f"  {name}=={md.version(name)}")
PY

touch "$STAMP"
echo "clip-retrieval peer venv ready: $VENV ($(( $(date +%s) - start ))s)"
