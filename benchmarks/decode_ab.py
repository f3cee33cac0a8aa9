"""Did a decoding change make it faster? Two commits decode the same inputs with the same model, timed in turns.

    .venv/bin/python -m benchmarks.decode_ab OLD NEW [--model models/export] [--data data/raw/test.jsonl] \\
        [--n 200] [--rounds 5] [--quantize none int8]

Each commit is checked out into a temporary git worktree. One worker process per commit and
``--quantize`` choice runs in that worktree and imports ``nmt`` from it (this checkout's
environment otherwise), loads the model once with its recorded decoding settings (what ``nmt
generate`` does), and decodes the first ``--n`` descriptions each time it is asked. The rounds
alternate the commits' order (old then new, then new then old, ...) so that a drift of the machine
hits both alike; the figure is each worker's median over the rounds. Printed as JSON: per choice,
both commits' median seconds, ``speedup`` (old ÷ new) and ``same_outputs`` (whether every output
of the two commits is identical, so the speed is for the same work). A commit's worker reports the
file it imported ``nmt`` from, and the run stops if that is not its worktree.

Run it with nothing else on the machine; the model directory must load under both commits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nmt.errors import fail

WORKER = r"""
import hashlib, json, sys, time
import torch
import nmt
from nmt.data.pairs import read_jsonl
from nmt.decoding.translator import Translator

model, data, n, quantize = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
texts = [r["nl"] for r in read_jsonl(data)[:n]]
translator = Translator.from_pretrained(model, device="cpu", quantize=quantize)
translator.translate(texts[:8])  # warm-up: first calls allocate and pick kernels
print(json.dumps({"nmt": nmt.__file__}), flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = [t.text for t in translator.translate(texts)]
    seconds = time.perf_counter() - start
    digest = hashlib.sha256("\n".join(outputs).encode()).hexdigest()
    print(json.dumps({"seconds": seconds, "outputs": digest}), flush=True)
"""


class Worker:
    """A decoding process importing ``nmt`` from ``tree``: :meth:`run` decodes once and times it."""

    def __init__(self, tree: Path, model: Path, data: Path, n: int, quantize: str):
        env = os.environ | {"PYTHONPATH": str(tree)}
        # cwd too: `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, str(model), str(data), str(n), quantize],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        imported = Path(self._reply()["nmt"]).resolve()
        if not imported.is_relative_to(tree.resolve()):
            self.close()
            fail(f"the worker for {tree} imported nmt from {imported}, not from the commit's worktree: "
                 f"something in its environment puts another nmt first")

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            fail(f"a decoding worker exited with {self.process.wait()} (its error is above)")
        return json.loads(line)

    def run(self) -> dict:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def worktree(repo: Path, commit: str, into: Path) -> Path:
    """A detached worktree of ``commit`` at ``into`` (removed by :func:`remove_worktree`)."""
    done = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(into), commit],
                          capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"cannot check out {commit!r}: {done.stderr.strip()} (give a commit of this repository)")
    return into


def remove_worktree(repo: Path, tree: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)


def compare(old: str, new: str, model: Path, data: Path, n: int, rounds: int, quantize: list[str],
            repo: Path = Path(".")) -> dict:
    """Both commits' median decode seconds per ``quantize`` choice, their ratio and whether the outputs agree."""
    for path in (model / "config.json", data):
        if not path.is_file():
            fail(f"{path} not found: `make repro` writes it, or pass --model / --data")
    result = {"old": old, "new": new, "model": str(model), "data": str(data), "n": n, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="decode-ab-") as tmp:
        trees: dict[str, Path] = {}
        try:
            # one at a time, so that a failed second still removes the first
            for name, commit in (("old", old), ("new", new)):
                trees[name] = worktree(repo, commit, Path(tmp) / name)
            for how in quantize:
                workers = {name: Worker(tree, model.resolve(), data.resolve(), n, how) for name, tree in trees.items()}
                runs: dict[str, list[dict]] = {name: [] for name in workers}
                for r in range(rounds):
                    for name in (list(workers) if r % 2 == 0 else list(reversed(workers))):
                        runs[name].append(workers[name].run())
                for w in workers.values():
                    w.close()
                seconds = {name: statistics.median(x["seconds"] for x in runs[name]) for name in runs}
                result[how] = {"old_s": round(seconds["old"], 6), "new_s": round(seconds["new"], 6),
                               "speedup": round(seconds["old"] / seconds["new"], 3),
                               "same_outputs": runs["old"][0]["outputs"] == runs["new"][0]["outputs"]}
        finally:
            for tree in trees.values():
                remove_worktree(repo, tree)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the commit before the change")
    parser.add_argument("new", help="the commit with the change")
    parser.add_argument("--model", type=Path, default=Path("models/export"), help="an exported model directory")
    parser.add_argument("--data", type=Path, default=Path("data/raw/test.jsonl"), help="JSONL of {nl, code} pairs")
    parser.add_argument("--n", type=int, default=200, help="descriptions decoded per run (the first N)")
    parser.add_argument("--rounds", type=int, default=5, help="timed decodes per commit, in alternating order")
    parser.add_argument("--quantize", nargs="+", default=["none", "int8"], choices=["none", "int8"],
                        help="the weights each pair of workers decodes with")
    args = parser.parse_args()
    if args.n < 1 or args.rounds < 1:
        fail(f"--n and --rounds must be >= 1, got {args.n} and {args.rounds}")
    print(json.dumps(compare(args.old, args.new, args.model, args.data, args.n, args.rounds, args.quantize),
                     indent=1))


if __name__ == "__main__":
    main()
