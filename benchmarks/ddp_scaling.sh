# One process accumulating 2 batches vs torchrun with 2 processes, and vs the multi-node form
# (two torchrun agents, --nnodes=2, c10d rendezvous over TCP on 127.0.0.1: one host standing in
# for two machines) (dropout 0: weights and losses must agree), and 1 process x 2 threads vs
# 2 processes x 1 thread (throughput) -> results/scaling.json, the README's Scaling table (make report):
#   bash benchmarks/ddp_scaling.sh  (about 4 minutes on 2 cores, MLflow off; nothing else running).
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
.venv/bin/python - "$SECONDS" <<'PY'
import csv, datetime, json, sys
from safetensors.torch import load_file
from nmt.io import atomic_write_json
from nmt.results import git, machine
from pathlib import Path
R = Path("/tmp/ddpm")

def weights(d):
    return load_file(R / d / "models/best.safetensors")

def diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)

def run(d):  # the last dev evaluation, and what the run was
    last = list(csv.DictReader(open(R / d / "metrics/train_curve.csv")))[-1]
    facts = json.load(open(R / d / "models/train_run.json"))
    return {"train_loss": float(last["train_loss"]), "dev_loss": float(last["dev_loss"]),
            "dev_bleu": float(last["dev_bleu"]), "world_size": facts["world_size"], "steps": facts["steps"]}

def speed(d):
    m, facts = json.load(open(R / d / "metrics/train.json")), json.load(open(R / d / "models/train_run.json"))
    return {"train_tokens_per_s": m["train_tokens_per_s"], "train_seconds": m["train_seconds"],
            "steps": facts["steps"], "world_size": facts["world_size"]}

one = weights("eq1")
out = {
    "command": "bash benchmarks/ddp_scaling.sh",
    "commit": git(Path("."), "rev-parse", "HEAD"),
    "date": datetime.date.today().isoformat(),
    "machine": machine(),
    "seconds": float(sys.argv[1]),
    "equivalence": {
        "steps": 20,
        "max_weight_diff_two_processes": diff(one, weights("eq2")),
        "max_weight_diff_two_nodes": diff(one, weights("mn")),
        "runs": {"one_process": run("eq1"), "two_processes": run("eq2"), "two_nodes": run("mn")},
    },
    "throughput": {"one_process": speed("sp1"), "two_processes": speed("sp2")},
}
atomic_write_json("results/scaling.json", out)
print(json.dumps(out, indent=2))
PY
