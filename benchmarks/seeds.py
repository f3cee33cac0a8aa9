"""Does a change cost quality? Two commits of the default pipeline, trained seed by seed -> results/seeds-NAME.json.

A change that moves the random stream (a cheaper dropout mask, another data order) trains a
different model at every seed, so one run of each commit cannot tell a cost from luck: the default
pipeline's test exact match moves by several points between seeds of one commit. This runs
``dvc exp run -S seed=N evaluate`` for each seed in a clone of each commit (an *arm*), keeps each
run's metrics files, and decides by a rule fixed on the command line before anything runs, on the
selection split's curve at its last evaluation (the dev loss, the least noisy measure of the model,
and the greedy dev exact match) averaged over the seeds: the second arm is adopted iff its mean dev
loss rises by at most ``--max-loss-rise`` and its mean dev exact match falls by at most
``--max-exact-match-drop``. The test split's scores are kept beside it, never deciding.

    .venv/bin/python -m benchmarks.seeds dropout-mask --arm old=5eb2313 --arm new=979bbf9 \\
        --seeds 1234 1235 1236 1237 1238          # ~6 minutes a run on 2 cores, one run at a time

Runs go to ``--runs`` (default ``.seeds/NAME``, ignored by git): ``ARM-SEED/`` holds the run's
``eval.json``, ``train.json``, ``train_curve.csv`` and ``commit``. A run already there is not run
again, so an interrupted comparison resumes; ``--collect`` only reads them. Run it with nothing else
on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from nmt.dvc import find_dvc, stage_environment
from nmt.errors import fail
from nmt.io import atomic_write_json, read_json
from nmt.results import machine, read_curve

RUN_FILES = ("metrics/eval.json", "metrics/train.json", "metrics/train_curve.csv")
MEASURES = ("dev_loss", "dev_exact_match", "dev_bleu", "test_exact_match", "test_bleu")


def read_run(run: Path) -> dict:
    """One run's figures: the selection split's curve at its last evaluation and the test split's scores."""
    curve = read_curve(run / "train_curve.csv")
    if not curve:
        fail(f"{run / 'train_curve.csv'} has no evaluation rows: the run did not reach its first evaluation", 1)
    last, test = curve[-1], read_json(run / "eval.json")
    return {"commit": (run / "commit").read_text().strip(), "step": int(last["step"]), "dev_loss": last["dev_loss"],
            "dev_exact_match": last["dev_exact_match"], "dev_bleu": last["dev_bleu"],
            "test_exact_match": test["exact_match"], "test_bleu": test["bleu"]}


def compare(runs: dict[str, dict[int, dict]], max_loss_rise: float, max_exact_match_drop: float) -> dict:
    """Means per arm over the seeds both arms ran, and the rule's verdict on the second arm against the first."""
    (base, base_runs), (other, other_runs) = runs.items()
    seeds = sorted(set(base_runs) & set(other_runs))
    if not seeds:
        fail(f"arms {base} and {other} have no seed in common: nothing to compare", 1)
    means = {arm: {m: round(statistics.mean(runs[arm][s][m] for s in seeds), 4) for m in MEASURES} for arm in runs}
    # Rounded as reported, so the verdict is the one the reported figures give (1.455 - 1.45 is 0.0050000000000001).
    loss_rise = round(means[other]["dev_loss"] - means[base]["dev_loss"], 4)
    em_drop = round(means[base]["dev_exact_match"] - means[other]["dev_exact_match"], 2)
    return {"seeds": seeds, "means": means, "dev_loss_rise": loss_rise, "dev_exact_match_drop": em_drop,
            # paired: on how many seeds the second arm's test exact match is below the first's
            "test_exact_match_lower_on": sum(other_runs[s]["test_exact_match"] < base_runs[s]["test_exact_match"]
                                             for s in seeds),
            "adopted": loss_rise <= max_loss_rise and em_drop <= max_exact_match_drop}


def clone(commit: str, where: Path) -> Path:
    """A clone of this repository at ``commit`` (made once; reused by later seeds and reruns)."""
    if not (where / ".git").is_dir():
        subprocess.run(["git", "clone", "--quiet", str(Path.cwd()), str(where)], check=True)
        subprocess.run(["git", "-C", str(where), "checkout", "--quiet", commit], check=True)
    return where


def run_seed(repo: Path, seed: int, out: Path) -> None:
    """``dvc exp run -S seed=N evaluate`` in ``repo``; its metrics files into ``out`` (written last, so a
    failed run leaves no directory to be read as done)."""
    dvc = find_dvc()
    if dvc is None:
        fail("dvc is not installed here (run `make install`, or put dvc on PATH)", 1)
    proc = subprocess.run([dvc, "exp", "run", "-S", f"seed={seed}", "evaluate"], cwd=repo, env=stage_environment(),
                          check=False)
    if proc.returncode != 0:
        fail(f"seed {seed} in {repo}: `dvc exp run` exited {proc.returncode}", 1)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in RUN_FILES:
        shutil.copy(repo / path, partial / Path(path).name)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    (partial / "commit").write_text(commit.stdout)
    partial.rename(out)


def parse_arm(text: str) -> tuple[str, str]:
    name, sep, commit = text.partition("=")
    if not sep or not name or not commit:
        raise argparse.ArgumentTypeError(f"--arm takes NAME=COMMIT, got {text!r}")
    return name, commit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the comparison's name: writes results/seeds-NAME.json")
    parser.add_argument("--arm", type=parse_arm, action="append", required=True,
                        help="NAME=COMMIT, twice: the first is the baseline, the second the change judged against it")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the seeds each arm trains with")
    parser.add_argument("--max-loss-rise", type=float, default=0.005,
                        help="adopt only if the mean dev loss at the last evaluation rises by at most this")
    parser.add_argument("--max-exact-match-drop", type=float, default=1.0,
                        help="adopt only if the mean greedy dev exact match at the last evaluation falls by at most this")
    parser.add_argument("--question", default="", help="what the comparison asks, kept in the result file")
    parser.add_argument("--runs", type=Path, help="where the runs are kept (default .seeds/NAME)")
    parser.add_argument("--collect", action="store_true", help="only read the runs already in --runs")
    parser.add_argument("--out", type=Path, help="default results/seeds-NAME.json")
    args = parser.parse_args(argv)
    arms = dict(args.arm)
    if len(args.arm) != 2 or len(arms) != 2:
        parser.error("give exactly two --arm with different names")
    runs_dir = args.runs or Path(".seeds") / args.name
    runs: dict[str, dict[int, dict]] = {}
    for arm, commit in arms.items():
        runs[arm] = {}
        for seed in args.seeds:
            run = runs_dir / f"{arm}-{seed}"
            if not run.is_dir():
                if args.collect:
                    fail(f"{run} is missing (run without --collect to train it)", 1)
                run_seed(clone(commit, runs_dir / f"clone-{arm}"), seed, run)
            runs[arm][seed] = read_run(run)
    verdict = compare(runs, args.max_loss_rise, args.max_exact_match_drop)
    out = args.out or Path("results") / f"seeds-{args.name}.json"
    atomic_write_json(out, {
        "command": shlex.join(["python", "-m", "benchmarks.seeds", *(argv if argv is not None else sys.argv[1:])]),
        "question": args.question, "date": dt.date.today().isoformat(), "machine": machine(),
        "rule": {"max_loss_rise": args.max_loss_rise, "max_exact_match_drop": args.max_exact_match_drop},
        "arms": {arm: {"commit": commit, "runs": {str(s): r for s, r in runs[arm].items()}}
                 for arm, commit in arms.items()},
        **verdict})
    base, other = arms
    print(f"wrote {out}: {f'adopt {other}' if verdict['adopted'] else f'keep {base}'} "
          f"(dev loss {verdict['dev_loss_rise']:+.4f}, dev exact match {-verdict['dev_exact_match_drop']:+.2f})")


if __name__ == "__main__":
    main()
