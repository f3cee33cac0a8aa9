#!/usr/bin/env bash
# The README's sweep, measured: 3 points of train.lr at 300 steps, queued, run with --jobs 2 and then
# --jobs 1, each in a fresh clone of this checkout (sharing its .venv), one after the other.
# Writes results/sweep.json (benchmarks/sweep_record.py: `dvc exp show` rows + both wall times);
# `make report` renders it into the README. About 25 minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PATH=$here/.venv/bin:$PATH DVC_NO_ANALYTICS=1
POINTS=(1e-3 2e-3 4e-3)
declare -A wall
for jobs in 2 1; do
  dir=$work/clone-j$jobs
  git clone -q "$here" "$dir"
  ln -s "$here/.venv" "$dir/.venv"
  (cd "$dir" && dvc repro tokenize >/dev/null)
  for lr in "${POINTS[@]}"; do
    (cd "$dir" && dvc exp run --queue -n "lr-$lr" -S "train.lr=$lr" -S train.max_steps=300 \
        -S train.eval_every=100 -S train.threads=1 >/dev/null)
  done
  start=$(date +%s.%N)
  (cd "$dir" && dvc queue start --jobs "$jobs" >/dev/null)
  # `dvc queue status` fails now and then while a worker writes its info file: retry
  while true; do
    s=$(cd "$dir" && dvc queue status 2>&1 || true)
    if echo "$s" | grep -q "Worker status"; then echo "$s" | grep -qE "Queued|Running" || break; fi
    sleep 5
  done
  end=$(date +%s.%N)
  wall[$jobs]=$(python3 -c "print(round($end - $start, 1))")
  echo "--jobs $jobs: ${wall[$jobs]} s"
done
cmd="dvc exp run --queue -n lr-X -S train.lr=X -S train.max_steps=300 -S train.eval_every=100 -S train.threads=1 (X = ${POINTS[*]}); dvc queue start --jobs N"
(cd "$here" && python -m benchmarks.sweep_record "$work/clone-j2" --wall "2=${wall[2]}" --wall "1=${wall[1]}" \
    --command "$cmd" --out results/sweep.json)
