"""Peak memory of the tokenize stage as the data grows: flat, because the stage streams.

    .venv/bin/python -m benchmarks.tokenize_memory [--pairs 10000 100000 1000000] [--placeholders]

For each size, a generated train.jsonl of that many pairs (dev and test: 1,000 each) is
tokenized in a fresh process (``nmt.stages.tokenize.tokenize_dataset``, the stage's whole work), and
that process's peak resident memory (``ru_maxrss``) is reported with its wall time and the size
of what it wrote. The pairs are Django-like: a description of 4-20 words drawn from 5,000
English-like words and 20,000 identifiers, and a line of code built from some of them; no two
lines are alike, so the vocabulary and the files grow as real data would.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys
from pathlib import Path
from nmt.config import TokenizeConfig
from nmt.stages.tokenize import tokenize_dataset
raw, out, placeholders = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
cfg = TokenizeConfig(string_placeholders=placeholders, name_placeholders=placeholders,
                     rare_words=10 if placeholders else 0, placeholder_tokens=placeholders)
stats = tokenize_dataset(raw, out, cfg)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "vocab_size": stats["vocab_size"], "train_tokens": stats["splits"]["train"]["src_tokens"]
                  + stats["splits"]["train"]["tgt_tokens"]}))
"""


def _word(rng: random.Random, letters: str, n: int) -> str:
    return "".join(rng.choice(letters) for _ in range(n))


def write_pairs(path: Path, n: int, seed: int) -> None:
    """``n`` generated (description, code) pairs as JSON lines, written as they are made."""
    rng = random.Random(seed)
    words = [_word(rng, "etaoinshrdlucmfwyp", rng.randint(2, 9)) for _ in range(5_000)]
    names = [f"{_word(rng, 'abcdefghijklmnopqrstuvwxyz', rng.randint(3, 8))}_{_word(rng, 'abcdefghijklmnop', 4)}"
             for _ in range(20_000)]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            used = rng.choices(names, k=3)
            desc = rng.choices(words, k=rng.randint(2, 16)) + used + [f"'{_word(rng, 'xyz ', 6)}'"]
            rng.shuffle(desc)
            code = f"{used[0]} = {used[1]} . {rng.choice(words)} ( {used[2]} , {i} )"
            f.write(json.dumps({"nl": " ".join(desc), "code": code}) + "\n")


def measure(n: int, placeholders: bool, work: Path) -> dict:
    raw = work / f"raw{n}"
    raw.mkdir()
    write_pairs(raw / "train.jsonl", n, seed=0)
    write_pairs(raw / "dev.jsonl", 1_000, seed=1)
    write_pairs(raw / "test.jsonl", 1_000, seed=2)
    out = work / f"tok{n}"
    t0 = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(out), "1" if placeholders else "0"],
                           check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return {"pairs": n, "raw_mb": round((raw / "train.jsonl").stat().st_size / 2**20, 1),
            "peak_rss_mb": round(result["peak_rss_mb"]), "seconds": round(seconds, 1),
            "out_mb": round(sum(p.stat().st_size for p in out.iterdir()) / 2**20, 1),
            "vocab_size": result["vocab_size"], "train_tokens": result["train_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                    help="training pairs per run, one run each")
    ap.add_argument("--placeholders", action="store_true",
                    help="the Django recipe's masking (strings, names, rare words, placeholder tokens)")
    args = ap.parse_args()
    print("| train pairs | raw MiB | peak RSS MiB | seconds | written MiB | vocabulary |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.pairs:
            r = measure(n, args.placeholders, Path(tmp))
            print(f"| {r['pairs']:,} | {r['raw_mb']} | {r['peak_rss_mb']} | {r['seconds']} | {r['out_mb']} | "
                  f"{r['vocab_size']:,} |", flush=True)


if __name__ == "__main__":
    main()
