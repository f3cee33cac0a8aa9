# One process accumulating 2 batches vs torchrun with 2 processes, and vs the multi-node form
# (two torchrun agents, --nnodes=2, c10d rendezvous over TCP on 127.0.0.1: one host standing in
# for two machines) (dropout 0: weights and losses must agree), and 1 process x 2 threads vs
# 2 processes x 1 thread (throughput). The README's Scaling table:
#   bash benchmarks/ddp_scaling.sh  (about 4 minutes on 2 cores, MLflow off).
set -e
cd "$(dirname "$0")/.."  # the repository root; needs data/tokenized from `make repro`
ROOT=$(pwd)
R=/tmp/ddpm; rm -rf $R; mkdir -p $R
mk() {  # dir, python overrides
  mkdir -p $R/$1/data; cp -r nmt pipeline $R/$1/; cp -r data/tokenized $R/$1/data/
  .venv/bin/python - "$R/$1" "$2" "$ROOT/params.yaml" <<'PY'
import sys, yaml, json
from pathlib import Path
d = Path(sys.argv[1]); over = json.loads(sys.argv[2])
p = yaml.safe_load(open(sys.argv[3]))
p["mlflow"]["enabled"] = False
for sec, kv in over.items(): p[sec].update(kv)
(d / "params.yaml").write_text(yaml.safe_dump(p))
PY
}
mk eq1 '{"train": {"max_steps": 20, "eval_every": 20, "eval_examples": 50, "accumulate": 2, "threads": 2}, "model": {"dropout": 0.0}}'
mk eq2 '{"train": {"max_steps": 20, "eval_every": 20, "eval_examples": 50, "accumulate": 1, "threads": 1}, "model": {"dropout": 0.0}}'
mk mn '{"train": {"max_steps": 20, "eval_every": 20, "eval_examples": 50, "accumulate": 1, "threads": 1}, "model": {"dropout": 0.0}}'
mk sp1 '{"train": {"max_steps": 60, "eval_every": 1000, "eval_examples": 50, "threads": 2}}'
mk sp2 '{"train": {"max_steps": 30, "eval_every": 1000, "eval_examples": 50, "threads": 1}}'
(cd $R/eq1 && $ROOT/.venv/bin/python -m pipeline.train > log 2>&1)
(cd $R/eq2 && $ROOT/.venv/bin/torchrun --standalone --nproc_per_node=2 -m pipeline.train > log 2>&1)
# "node" 1 in the background, "node" 0 in the foreground: the same command with its own --node-rank
NODE="--nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:29531 --rdzv-id=nmt-mn"
(cd $R/mn && $ROOT/.venv/bin/torchrun $NODE --node-rank=1 -m pipeline.train > log1 2>&1) &
(cd $R/mn && $ROOT/.venv/bin/torchrun $NODE --node-rank=0 -m pipeline.train > log 2>&1)
wait
(cd $R/sp1 && $ROOT/.venv/bin/python -m pipeline.train > log 2>&1)
(cd $R/sp2 && $ROOT/.venv/bin/torchrun --standalone --nproc_per_node=2 -m pipeline.train > log 2>&1)
.venv/bin/python - <<'PY'
import json
from safetensors.torch import load_file
R = "/tmp/ddpm"
a, b = load_file(f"{R}/eq1/models/best.safetensors"), load_file(f"{R}/eq2/models/best.safetensors")
c = load_file(f"{R}/mn/models/best.safetensors")
print("max |w1 - w2| after 20 steps:", max((a[k] - b[k]).abs().max().item() for k in a))
print("max |w1 - w(2 nodes)| after 20 steps:", max((a[k] - c[k]).abs().max().item() for k in a))
print("2 nodes: world_size", json.load(open(f"{R}/mn/metrics/train.json"))["world_size"])
for d in ("eq1", "eq2", "mn"):
    print(d, open(f"{R}/{d}/metrics/train_curve.csv").read().strip().splitlines()[-1])
for d in ("sp1", "sp2"):
    m = json.load(open(f"{R}/{d}/metrics/train.json")); print(d, m["train_tokens_per_s"], m["steps"], m["world_size"], m["train_seconds"])
PY
