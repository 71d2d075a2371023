#!/usr/bin/env bash
# The two GPU figures (#3 embedding throughput, #4 training time), on a lent
# H100/H200 (the device tool). That machine has python3 3.12 with CUDA torch,
# transformers, numpy and Pillow, but no faiss and no ../shared: both travel in
# a git-ignored folder, one call each (the working tree that travels is capped
# at 64 MiB). Prepare here, in the repository root:
#
#   echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu
#   cp ../shared/data/coco256-000.tar .gpu/                       # for: embed
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .gpu faiss-cpu==1.15.1                                   # for: index
#
# then run `bash bench/gpu_session.sh embed` with carry [".gpu"] (the tar alone),
# and `bash bench/gpu_session.sh index` with carry [".gpu"] (the wheel alone: move
# the tar out first). Results land in $OUT; copy them into bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vsearch-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
{ nvidia-smi -L || echo "no nvidia-smi: no GPU here"; } | tee "$OUT/device.txt"
case "${1:-}" in
  embed)
    python3 bench/embed_throughput.py --gpu-clip --batch-size 256 --repeat 40 \
      --cifar 0 --data .gpu --out "$OUT/embed_throughput_gpu.md"
    ;;
  index)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl
    export PYTHONPATH=/tmp/site:$PYTHONPATH
    python3 bench/index_train_device.py --n 1000000 --out "$OUT/index_train_device.md"
    ;;
  *)
    echo "usage: $0 embed|index" >&2
    exit 2
    ;;
esac
