"""``make report``: every measured table of the README and of ``docs/``, rendered from committed files.

A table lives between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->``; the renderer for NAME
rewrites what lies between them, and ``tests/test_report.py`` fails whenever a rendered file
differs from a fresh rendering. No figure is typed by hand: each comes from

- ``metrics/eval.json``, ``metrics/train.json``, ``metrics/train_curve.csv``, ``plots/examples.md``
  and ``params.yaml``: the default pipeline (``dvc repro``);
- ``results/default-ablation.json``: ``python -m benchmarks.ablation``;
- ``results/<recipe>-<date>.json``: ``python -m nmt.recipes <recipe> --run`` (the newest file);
- ``results/published.json``: published scores, each with its source;
- ``benchmarks/results.json``: ``python -m benchmarks``; its ``gpu`` key, ``bash benchmarks/gpu.sh`` on a GPU;
- ``results/scaling.json``: ``bash benchmarks/ddp_scaling.sh``;
- ``results/profiles.json``: ``python -m benchmarks.profiles``;
- ``results/seeds-NAME.json``: ``python -m benchmarks.seeds NAME ...``.

A file that is not there renders as the command that writes it, never as a made-up figure.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from nmt.config import RERANK_WEIGHTS
from nmt.io import atomic_write_text, read_json
from nmt.recipes import set_args, setting_values
from nmt.recipes import settings as _settings
from nmt.results import latest_result, run_order

README = Path("README.md")
DOCS = Path("docs")
PARAMS = Path("params.yaml")
EVAL, TRAIN, CURVE = Path("metrics/eval.json"), Path("metrics/train.json"), Path("metrics/train_curve.csv")
EXAMPLES, ABLATION = Path("plots/examples.md"), Path("results/default-ablation.json")
PUBLISHED, BENCH, SCALING = Path("results/published.json"), Path("benchmarks/results.json"), Path("results/scaling.json")
PROFILES = Path("results/profiles.json")
MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)
SCORES = (("exact_match", "exact match %"), ("exact_match_ast", "same syntax tree %"), ("bleu", "BLEU"), ("chrf", "chrF"), ("syntax_valid", "syntax-valid %"))
RETRIEVAL = "retrieval baseline: code of the nearest training description (TF-IDF)"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join([_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]) + "\n"


def _score(metrics: dict, key: str) -> str:
    """One score to a decimal, or – where the file predates the metric."""
    return f"{metrics[key]:.1f}" if key in metrics else "–"


def _scores(metrics: dict, prefix: str = "") -> list[str]:
    return [_score(metrics, prefix + key) for key, _ in SCORES]


def _missing(path: Path, command: str) -> str:
    return f"Not measured yet: `{command}` writes `{path}`.\n"


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def _machine(m: dict) -> str:
    return f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}"


def _decoding_rows(ev: dict, evaluate: dict) -> list[list[str]]:
    """The reranked choice, the beam's top hypothesis, greedy and the retrieval baseline, as scored."""
    beam, rerank = evaluate["beam_size"], evaluate["rerank"]
    chosen = f"model: beam {beam}" + (f" + {rerank} rerank" if rerank != "none" and beam > 1 else "")
    rows = [[chosen + " (what `nmt generate` does)", *_scores(ev)]]
    if "top1_exact_match" in ev:
        rows.append([f"model: beam {beam}, its top hypothesis", *_scores(ev, "top1_")])
    if "greedy_exact_match" in ev:
        rows.append(["model: greedy", *_scores(ev, "greedy_")])
    rows.append([RETRIEVAL, *_scores(ev, "baseline_")])
    return rows


# --------------------------------------------------------------------------- the default pipeline
def default_results(root: Path) -> str:
    """Test-split scores of the default model, each decoding beside the retrieval baseline."""
    ev, tr = read_json(root / EVAL), read_json(root / TRAIN)
    params = yaml.safe_load((root / PARAMS).read_text(encoding="utf-8"))
    ratio = ev["exact_match"] / max(ev["baseline_exact_match"], 1e-9)
    return (_table(["decoding", *(label for _, label in SCORES)], _decoding_rows(ev, params["evaluate"]))
            + f"\nScored on the {ev['split']} split. Exact match is {ratio:.2f}× the retrieval baseline's; the model trained "
            f"{params['train']['max_steps']:,} steps (`train.max_steps`) in {tr['train_seconds']:.0f} s "
            f"at {tr['train_tokens_per_s']:,} target tokens/s.\n")


def default_curve(root: Path) -> str:
    """The selection (dev) split during training: greedy decoding of its first pairs."""
    rows = list(csv.DictReader(io.StringIO((root / CURVE).read_text())))
    return _table(CURVE_HEADER, [[r["step"], f"{float(r['train_loss']):.3f}", f"{float(r['dev_loss']):.3f}",
                                  f"{float(r['dev_bleu']):.1f}", f"{float(r['dev_exact_match']):.1f}",
                                  _tree(r.get("dev_exact_match_ast"))] for r in rows])


# A curve from before dev scored the syntax tree (or of code that is not Python) has no such column.
CURVE_HEADER = ["step", "train loss", "dev loss", "dev BLEU", "dev exact match %", "dev same syntax tree %"]


def _tree(value: str | float | None) -> str:
    return "–" if value in (None, "") else f"{float(value):.1f}"


def default_examples(root: Path) -> str:
    """The evaluate stage's fixed sample of the test split, as it wrote it."""
    return (root / EXAMPLES).read_text()


def default_ablation(root: Path) -> str:
    """One row per variant of ``benchmarks.ablation``, each run from scratch at the default budget."""
    if not (root / ABLATION).is_file():
        return _missing(ABLATION, "python -m benchmarks.ablation")
    result = read_json(root / ABLATION)
    rows = []
    for variant in result["variants"].values():
        ev, tr = variant["metrics/eval.json"], variant["metrics/train.json"]
        rows.append([variant["description"], f"{ev['exact_match']:.1f}", f"{ev['bleu']:.1f}",
                     f"{ev['greedy_exact_match']:.1f}", f"{tr['best_dev_exact_match']:.1f}",
                     f"{tr['best_dev_bleu']:.1f}", f"{tr['train_seconds']:.0f}", f"{variant['pipeline_seconds']:.0f}"])
    return (_table(["variant", "test EM %", "test BLEU", "test EM %, greedy", "dev EM % (selection)",
                    "dev BLEU (selection)", "train s", "whole `dvc exp run` s"], rows)
            + f"\n`{result['command']}` at commit {result['commit'][:7]}, on {_machine(result['machine'])}.\n")


# --------------------------------------------------------------------------- the Django recipe
def _recipe(root: Path, name: str) -> dict | None:
    path = latest_result(name, root)
    return read_json(path) if path else None


def django_results(root: Path) -> str:
    """The newest Django recipe run: each decoding on the test split, with what the run cost."""
    result = _recipe(root, "django")
    if result is None:
        return _missing(Path("results/django-<date>.json"), "make django")
    ev, facts = result["metrics"]["eval"], result["run"].get("train", {})
    evaluate = _evaluate_settings(result, _params_evaluate(root))
    wall = result["wall_seconds"]
    cost = f"the whole `dvc exp run` {_minutes(wall['dvc_exp_run'])}, training {_minutes(wall['train'])}"
    if "reverse" in wall:
        cost += f" + {_minutes(wall['reverse'])} for the reverse model"
    if "resumed_after" in wall:  # a run stopped (Ctrl-C writes a checkpoint) and resumed by the same command
        cost += f", in two parts: stopped after {_minutes(wall['resumed_after'])} and resumed from its checkpoint"
    trained = f"{facts['steps']:,} steps, {facts['epochs']} epochs; " if {'steps', 'epochs'} <= set(facts) else ""
    extra = "".join(f" -S {setting}" for setting in _extra_settings(result))
    ran = f"`make django EXP_ARGS='{extra.strip()}'`" if extra else "`make django`"
    return (_table(["decoding", *(label for _, label in SCORES)], _decoding_rows(ev, evaluate))
            + f"\n{ran} at commit {result['commit'][:7]}{' (uncommitted changes)' if result['dirty'] else ''}"
            f" on {result['date']}, {_machine(result['machine'])}: {trained}{cost}.\n")


def _extra_settings(result: dict) -> list[str]:
    """The run's ``-S`` settings beyond its recipe's own: a lever's run (``python -m nmt.recipes
    django --run -S KEY=VALUE``) that the recipe then adopted, so the file says what really ran."""
    own = set(_settings(set_args(result["overrides"])))
    return [setting for setting in _settings(result["command"]) if setting not in own]


def _params_evaluate(root: Path) -> dict:
    """params.yaml's evaluate section: what a recipe run decodes with where it sets nothing."""
    return yaml.safe_load((root / PARAMS).read_text(encoding="utf-8"))["evaluate"]


def _evaluate_settings(result: dict, defaults: dict) -> dict:
    """The evaluate section a recipe run decoded with: ``defaults`` (params.yaml's), then the
    recipe's, then the command line's ``-S`` (which win, as they did in the run)."""
    return {**defaults, **result["overrides"].get("evaluate", {}), **_section_settings(result["command"], "evaluate")}


def django_curve(root: Path) -> str:
    """The recipe's selection split during training (greedy decoding, placeholders restored)."""
    result = _recipe(root, "django")
    if result is None or not result.get("curve"):
        return _missing(Path("results/django-<date>.json"), "make django")
    return _table(CURVE_HEADER, [[f"{r['step']:,.0f}", f"{r['train_loss']:.3f}", f"{r['dev_loss']:.3f}",
                                  f"{r['dev_bleu']:.1f}", f"{r['dev_exact_match']:.1f}", _tree(r.get("dev_exact_match_ast"))]
                                 for r in result["curve"]])


def django_runs(root: Path) -> str:
    """Every committed run of the Django recipe (``results/django-*.json``, a replaced run kept under
    a name of its own), side by side: what the recipe was chosen on (the selection split), what it
    reports (the test split), and what it cost."""
    def order(run: tuple[dict, Path]) -> tuple:
        """By day; within a day the replaced runs kept under names of their own (by name), then the
        recipe's runs in the order they ran (``-2`` after the first), so the recipe's current run,
        the newest, comes last."""
        data, path = run
        n = (run_order("django", path) or ("", 0))[1]
        return data["date"], n, path.name

    runs = sorted(((read_json(p), p) for p in root.glob("results/django-*.json")), key=order)
    if not runs:
        return _missing(Path("results/django-<date>.json"), "make django")
    rows, defaults = [], _params_evaluate(root)  # params.yaml read once, not once per run
    for r, path in runs:
        facts, train, ev, wall = r["run"].get("train", {}), r["metrics"]["train"], r["metrics"]["eval"], r["wall_seconds"]
        evaluate = _evaluate_settings(r, defaults)
        best = f" (best {facts['best_step']:,})" if "best_step" in facts else ""
        extra = "".join(f" `-S {setting}`" for setting in _extra_settings(r))
        rows.append([f"`{path.name}`{extra}", r["commit"][:7], facts.get("precision", "fp32"), f"{facts['steps']:,}{best}",
                     ", ".join(f"{evaluate[key]:g}" for key in RERANK_WEIGHTS),
                     f"{train['best_dev_exact_match']:.1f} / {train['best_dev_bleu']:.1f}",
                     f"{ev['exact_match']:.1f} / {_score(ev, 'exact_match_ast')} / {ev['bleu']:.1f}",
                     f"{wall['train'] / 60:.0f} + {wall.get('reverse', 0) / 60:.0f}",
                     f"{wall['dvc_exp_run'] / 60:.0f}"])
    return (_table(["result file", "commit", "precision", "steps (the checkpoint's)",
                    "reranker weights: missing, unexplained, repeated, reconstruction",
                    "selection split: best greedy exact match % / BLEU",
                    "test split: exact match % / same syntax tree % / BLEU",
                    "training + reverse model, min", "whole `dvc exp run`, min"], rows)
            + "\nThe selection split's figures are those the checkpoint and the recipe's settings are chosen on; the "
              "test split's are the reported ones (beam search with reranking).\n")


def _lever_settings(lever: list[str], baseline: list[str], root: Path) -> list[str]:
    """The lever command's ``-S`` settings that change what the baseline's command ran. The baseline
    ran params.yaml's value for a key its command does not set, so a lever setting that value (a
    key the recipe has listed since) changes nothing."""
    params = root / "params.yaml"
    ran = [*(_settings(set_args(yaml.safe_load(params.read_text(encoding="utf-8")))) if params.is_file() else []),
           *_settings(baseline)]
    ran_values = setting_values(ran)
    return [s for s in _settings(lever) if ran_values.get(s.split("=", 1)[0]) != s.split("=", 1)[1]]


def _section_settings(command: list[str], section: str) -> dict:
    """The ``-S section.key=value`` settings of a command line as {key: value}, the last one of a
    key winning as it does for DVC (values in the YAML form Hydra's override grammar shares)."""
    return {key[len(section) + 1:]: yaml.safe_load(value)
            for key, value in setting_values(_settings(command)).items() if key.startswith(section + ".")}


def django_levers(root: Path) -> str:
    """Each lever run (``results/lever-django-NAME.json``: the result file of ``python -m nmt.recipes
    django --run -S ...`` with the lever's settings, renamed) beside the recipe's own run at the same
    steps. With the recipe's cosine schedule the two follow the same learning rate step for step
    only when the lever keeps ``train.max_steps``; a lever that changes it runs another schedule, so
    its figures compare at the same steps but not at the same point of the schedule.

    The recipe's run is the newest ``results/django-<date>.json``, or the file a lever names as its
    ``baseline`` (a lever the recipe has since adopted keeps the run it was measured against).

    A lever file may also hold ``speed`` (both runs' training tok/s measured on one machine by
    ``benchmarks.recipe_speed``, when the two runs ran on different machines) and ``stopped``
    (``at_step``, ``of_steps``, ``why``: a run stopped before its end, its curve ending there)."""
    recipe = _recipe(root, "django")
    paths = sorted(root.glob("results/lever-django-*.json"))
    if recipe is None or not paths:
        return _missing(Path("results/lever-django-NAME.json"),
                        "python -m nmt.recipes django --run -S KEY=VALUE ..., its results/django-<date>.json renamed")
    rows = []
    for path in paths:
        lever = read_json(path)
        baseline = read_json(root / lever["baseline"]) if "baseline" in lever else recipe
        base, base_train = {r["step"]: r for r in baseline["curve"]}, baseline["metrics"]["train"]
        settings = ", ".join(f"`{s}`" for s in _lever_settings(lever["command"], baseline["command"], root))
        rows.append([settings, *_lever_speed(lever, baseline, base_train)])
        if "stopped" in lever:
            stop = lever["stopped"]
            ran = baseline.get("run", {}).get("train", {}).get("steps")
            rows.append(["", "stopped", f"ran to step {ran:,}" if ran else "–",
                         f"at step {stop['at_step']:,} of {stop['of_steps']:,}: {stop['why']}"])
        for r in lever["curve"]:
            b = base.get(r["step"])
            if b is not None:
                rows.append(["", f"step {r['step']:,.0f}: dev exact match % / dev loss / dev BLEU",
                             f"{b['dev_exact_match']:.1f} / {b['dev_loss']:.3f} / {b['dev_bleu']:.1f}",
                             f"{r['dev_exact_match']:.1f} / {r['dev_loss']:.3f} / {r['dev_bleu']:.1f}"])
    return (_table(["lever (settings over the recipe's run)", "measured", "the recipe's run", "with the lever"], rows)
            + "\nDev is the selection split, decoded greedily during training.\n")


def _lever_speed(lever: dict, baseline: dict, base_train: dict) -> list[str]:
    """The training tok/s row of a lever: both runs' own figures, or the one-machine ``speed``."""
    if "speed" in lever:
        speed = lever["speed"]
        return ["training tok/s on one machine (`benchmarks.recipe_speed`)",
                f"{speed['recipe_tok_s']:,} ({speed['machine']})",
                f"{speed['lever_tok_s']:,} ({_x(speed['lever_tok_s'] / speed['recipe_tok_s'])})"]
    train = lever["metrics"]["train"]
    return ["training tok/s", f"{base_train['train_tokens_per_s']:,} (commit {baseline['commit'][:7]})",
            f"{train['train_tokens_per_s']:,} ({_x(train['train_tokens_per_s'] / base_train['train_tokens_per_s'])})"]


def django_errors(root: Path) -> str:
    """Each error analysis of the Django recipe's export on the selection split
    (``results/error-analysis-django-*.json``, ``benchmarks/error_analysis.py``): one row per search."""
    paths = sorted(root.glob("results/error-analysis-django-*.json"))
    if not paths:
        return _missing(Path("results/error-analysis-django-NAME.json"),
                        "python -m benchmarks.error_analysis models/export data/raw/dev.jsonl --train "
                        "data/raw/train.jsonl --out results/error-analysis-django-NAME.json")
    rows = []
    for path in paths:
        r = read_json(path)
        c = r["counts"]
        search = f"beam {r['beam_size']}" + (", grammar" if r.get("grammar") else "")
        rows.append([f"`{path.name}`", search, f"{r['exact_match']:.1f}", f"{r['ceiling']:.1f}",
                     f"{r['n_best_not_parsing_pct']:.1f}",
                     *(f"{c[k]['ranked lower']} / {c[k]['never in the n-best']}" for k in ("name", "literal", "structure")),
                     str(r["quote_style_only"]), "–" if r.get("neighbour_has_shape") is None else str(r["neighbour_has_shape"])])
    return _table(["file", "search", "exact match %", "ceiling %", "n-best not parsing %",
                   "name: ranked lower / never in the n-best", "literal: same", "structure: same", "quote style only",
                   "neighbour has the shape"], rows)


def django_reranking(root: Path) -> str:
    """Each reranker study of an export on the selection split (``results/rerank-django-*.json``,
    ``benchmarks/rerank_weights.py --out``): the n-best's figures, the cross-validated exact match of the
    weight grid, and per retrieval key what the nearest training pair adds."""
    paths = sorted(root.glob("results/rerank-django-*.json"))
    if not paths:
        return _missing(Path("results/rerank-django-NAME.json"),
                        "python -m benchmarks.rerank_weights models/export data/raw/dev.jsonl --neighbour words "
                        "--neighbour template --out results/rerank-django-NAME.json")
    out = []
    for path in paths:
        r = read_json(path)
        rows = [["the model's n-best, the reranker's grid", "–", "–", "–",
                 f"{r['grid']['cross_validated_mean']:.2f}"]]
        for key, n in r["neighbour"].items():
            rows.append([f"+ agreement with the nearest training pair's shape, pairs compared by their {key}",
                         f"{n['retrieval_baseline']:.1f}", f"{n['retrieved_line_right']:.1f}",
                         f"{n['retrieved_line_right_beyond_ceiling']:.1f}", f"{n['grid']['cross_validated_mean']:.2f}"])
        models = f", an ensemble of {1 + len(r['ensemble'])} models" if r.get("ensemble") else ""
        out.append(f"`{path.name}`: {r['pairs']:,} pairs of `{r['data']}`, beam {r['beam_size']}{models}: top hypothesis "
                   f"{r['top_hypothesis']:.1f}, ceiling (the reference in the n-best) {r['ceiling']:.1f}, the export's "
                   f"own weights {r['model_weights_exact_match']:.1f}; `{r['command']}`.\n\n"
                   + _table(["reranker", "retrieval baseline %", "its line with the names filled in %",
                             "... of which the n-best lacks the reference %", "cross-validated exact match %"], rows))
    return "\n".join(out)


def sweep(root: Path) -> str:
    """The README's queued sweep: `dvc exp show`'s rows and the queue's wall time per --jobs (results/sweep.json)."""
    path = root / "results/sweep.json"
    if not path.is_file():
        return _missing(Path("results/sweep.json"), "bash benchmarks/sweep_walltime.sh")
    r = read_json(path)
    rows = [[f"`{e['name']}`", f"{e['train.lr']:g}", f"{e['train.max_steps']:,}", f"{e['best_dev_bleu']:.1f}",
             f"{e['bleu']:.1f}", f"{e['exact_match']:.1f}", f"{e['train_seconds']:.0f}"] for e in r["experiments"]]
    walls = ", ".join(f"`--jobs {jobs}` {_minutes(s)}" for jobs, s in sorted(r["wall_seconds_by_jobs"].items()))
    return (_table(["experiment", "train.lr", "steps", "best dev BLEU", "test BLEU", "test exact match %",
                    "train seconds"], rows)
            + f"\nThe whole queue: {walls} (`bash benchmarks/sweep_walltime.sh` at commit {r['commit'][:7]} on "
            f"{r['date']}, {_machine(r['machine'])}).\n")


def published(root: Path) -> str:
    """Published Django test-split scores, each with its source (``results/published.json``)."""
    data = read_json(root / PUBLISHED)["django"]
    rows = [[s["system"], f"{s['exact_match']:.1f}", f"{s['bleu']:.1f}" if s.get("bleu") is not None else "–",
             s["source"]] for s in data["systems"]]
    return _table(["system (published, Django test split)", "exact match %", "BLEU", "source"], rows) + \
        f"\n{data['note']}\n"


# --------------------------------------------------------------------------- benchmarks and scaling
def _x(value: float) -> str:
    return f"**{value:.2f}×**"


def _target(value: float, bound: float, text: str, strict: bool = False) -> str:
    """The target's text, and whether this run met it (``value >= bound``; ``>`` when strict)."""
    met = value > bound if strict else value >= bound
    return f"{text}: {'met' if met else 'missed'}"


def benchmarks(root: Path) -> str:
    """``benchmarks/results.json``: each comparison against the other tool's fastest way."""
    if not (root / BENCH).is_file():
        return _missing(BENCH, "make bench")
    return benchmarks_table(read_json(root / BENCH))


def benchmarks_table(r: dict[str, Any]) -> str:
    """The table of one ``python -m benchmarks`` run (what it prints, and the README's)."""
    s24, s128 = r["by_length"]["24"], r["by_length"]["128"]
    peak = (f"{r['peak_flops'] / 1e9:,.0f} GFLOP/s measured {r['peak_flops_dtype']} "
            f"(at the run's end: {r['peak_flops_end'] / 1e9:,.0f})")
    if r.get("theoretical_peak_flops"):
        peak += f" (datasheet {r['theoretical_peak_flops'] / 1e12:,.0f} TFLOP/s)"
    mfu = f"**{r['mfu']:.1%}** ({s24['mfu']:.1%}) of {peak}"
    runs = r.get("mfu_runs") or []
    calls = r["tiktoken_calls"]
    rows = [
        ["training tok/s, length 24: ours / `nn.Transformer`",
         f"{s24['train_tok_s']:,} / {s24['torch_transformer_tok_s']:,} = {_x(s24['train_speedup_vs_torch'])}",
         _target(s24["train_speedup_vs_torch"], 1.2, "≥ 1.2×")],
        ["training tok/s, length 128: ours / `nn.Transformer`",
         f"{s128['train_tok_s']:,} / {s128['torch_transformer_tok_s']:,} = {_x(s128['train_speedup_vs_torch'])}",
         _target(s128["train_speedup_vs_torch"], 1.2, "≥ 1.2×")],
        ["MFU, length 128 (length 24)", mfu, _target(r["mfu"], 0.6, "≥ 60 %")],
        *([[f"MFU of the last {len(runs)} `make bench` runs here, length 128: their spread (max − min) / max",
            " / ".join(f"{x['mfu']:.1%}" for x in runs) + f": **{r['mfu_spread']:.1%}**",
            _target(0.05, r["mfu_spread"], "< 5 %", strict=True)]] if len(runs) > 1 else []),
        [f"greedy, {r['greedy_output_tokens']} tokens: recomputing the prefix / KV cache",
         f"{r['greedy_uncached_s']:.2f} s / {r['greedy_cached_s']:.2f} s = {_x(r['kv_cache_speedup'])}",
         _target(r["kv_cache_speedup"], 3.0, "≥ 3×")],
        [f"beam 4 × 64 sources, {r['beam_output_tokens']} tokens: HF `generate` "
         f"({r['hf_fastest_setting']}, its fastest of those timed) / ours",
         f"{r['hf_bart_beam_s']:.2f} s / {r['beam_s']:.2f} s = {_x(r['beam_speedup_vs_hf'])}",
         _target(r["beam_speedup_vs_hf"], 1.5, "≥ 1.5×")],
        ["beam 4 × 64 sources: one source at a time / one batch",
         f"{r['beam_one_at_a_time_s']:.2f} s / {r['beam_s']:.2f} s = {_x(r['beam_batching_speedup'])}", ""],
        [f"tokenizer tok/s: ours / tiktoken's fastest call (`{r['tiktoken_fastest_call']}`)",
         f"{r['tokenize_tok_s'] / 1e6:.2f} M / {r['tiktoken_fastest_tok_s'] / 1e6:.2f} M"
         f" = {_x(r['tokenize_ratio_vs_tiktoken'])}",
         _target(min(r["tokenize_ratio_vs_tiktoken"] / 0.8, r["tokenize_tok_s"] / 1e6), 1.0, "≥ 0.8×, ≥ 1 M tok/s")],
        ["peak RSS of a training step, length 24 / 128", f"{s24['peak_rss_mb']:,.0f} / {s128['peak_rss_mb']:,.0f} MiB", ""],
        ["share of step time waiting for batches", f"**{r['data_wait_share']:.1%}**",
         _target(0.05, r["data_wait_share"], "< 5 %", strict=True)],
    ]
    rows += ctranslate2_rows(r)
    rows += _deployment_rows(r)
    rows.append(["tiktoken, every call timed (tok/s)",
                 ", ".join(f"`{name}` {tok_s / 1e6:.2f} M" for name, tok_s in calls.items()), ""])
    rows.append(["HF `generate`, every setting timed (s)",
                 ", ".join(f"{name} {s:.2f}" if isinstance(s, (int, float)) else f"{name}: {s}"
                           for name, s in r["hf_generate_s"].items()), ""])
    return (_table(["measurement", "result", "target"], rows)
            + f"\n`make bench`{' --quick' if r.get('quick') else ''} on {r['device']}, torch {r['versions']['torch']}, "
            f"{_minutes(r['seconds'])}.\n")


def _deployment_rows(r: dict[str, Any]) -> list[list[str]]:
    """Int8 CPU decoding and the served model under load (benchmarks/int8.py, benchmarks/serve_load.py):
    a run that could not measure them (no exported model) says why; an older results file, that it predates them."""
    not_yet = "not in this results.json: `make bench` after `make repro`"
    if "int8_decode_speedup" in r:
        i8 = r["int8"]
        int8_rows = [
            [f"int8 decoding, {i8['n']:,} test descriptions, the model's beam search: tok/s int8 / float32",
             f"{i8['int8']['tok_s']:,.0f} / {i8['fp32']['tok_s']:,.0f} = {_x(r['int8_decode_speedup'])}",
             _target(r["int8_decode_speedup"], 1.5, "≥ 1.5×")],
            ["int8 decoding: exact match % float32 − int8",
             f"{i8['fp32']['exact_match']:.1f} − {i8['int8']['exact_match']:.1f} = **{r['int8_exact_match_drop']:.1f}**",
             _target(1.0, r["int8_exact_match_drop"], "≤ 1.0 point")]]
    else:
        reason = r.get("int8", not_yet)
        int8_rows = [["int8 decoding: tok/s int8 / float32", reason, "≥ 1.5×"],
                     ["int8 decoding: exact match % float32 − int8", reason, "≤ 1.0 point"]]
    if "serve_requests_per_s" in r:
        serve_rows = _serve_rows(r, not_yet)
    else:
        reason = r.get("serve_load", not_yet)
        serve_rows = [["served model under 8 concurrent clients: requests/s, latency p50 / p99", reason, ""],
                      ["served model: failed requests", reason, "0"]]
    return int8_rows + serve_rows


def _serve_rows(r: dict[str, Any], not_yet: str) -> list[list[str]]:
    """The served model under load, each request decoded apart (before) and batched (after)."""
    def load_cells(m: dict[str, Any]) -> str:
        return f"**{m['serve_requests_per_s']:.2f}**/s, {m['serve_p50_ms']:,.0f} / {m['serve_p99_ms']:,.0f} ms"

    load = r["serve_load"]
    what = (f"`mlflow models serve`, {load['clients']} concurrent clients for {load['seconds']:.0f} s, one "
            "description a request")
    before = r.get("serve_unbatched")
    if before is None:  # a results file from before batching
        return [[f"{what}: requests/s, latency p50 / p99", load_cells(r), ""],
                ["served model: failed requests", f"**{r['serve_errors']}** of {load['requests'] + r['serve_errors']:,}",
                 _target(0, r["serve_errors"], "0")],
                ["served model, concurrent requests decoded together: before / after", not_yet, ""]]
    errors, requests = r["serve_errors"] + before["serve_errors"], load["requests"] + before["serve_load"]["requests"]
    return [[f"{what}, each decoded apart (before): requests/s, latency p50 / p99", load_cells(before), ""],
            [f"the same, requests waiting during a decode decoded together, up to {r['serve_max_batch']}, "
             f"waiting ≤ {r.get('serve_max_wait_ms', 0):g} ms for them (after; the registered model): requests/s, "
             "latency p50 / p99", load_cells(r), ""],
            ["batching concurrent requests: requests/s after / before; identical answers",
             f"{_x(r['serve_batching_speedup'])}; {100 * r['serve_same_output']:.1f}%", ""],
            ["served model: failed requests, before and after", f"**{errors}** of {requests + errors:,}",
             _target(0, errors, "0")]]


def ctranslate2_rows(r: dict[str, Any]) -> list[list[str]]:
    """The CTranslate2 comparison's rows (benchmarks/vs_ctranslate2.py); one saying so where a run predates it."""
    if "beam_speedup_vs_ctranslate2" not in r:
        return [["beam 4, CPU: ours / CTranslate2 (tok/s)", "not measured in this run: `make bench`", "≥ 0.67×"]]
    head = f"beam 4 × 64 sources, {r['ctranslate2_beam_output_tokens']} tokens, CPU"
    int8 = r.get("beam_int8_speedup_vs_ctranslate2_int8")
    settings = [f"{kind} {name} {s:.2f}" if isinstance(s, (int, float)) else f"{kind} {name}: {s}"
                for kind, key in (("fp32", "ctranslate2_beam_s"), ("int8", "ctranslate2_int8_beam_s"))
                for name, s in r[key].items()]
    return [
        [f"{head}, fp32: ours / CTranslate2 ({r['ctranslate2_fastest_setting']}, its fastest) tok/s",
         f"{r['ours_beam_tok_s']:,} / {r['ctranslate2_beam_tok_s']:,} = {_x(r['beam_speedup_vs_ctranslate2'])}",
         _target(r["beam_speedup_vs_ctranslate2"], 0.67, "≥ 0.67×")],
        [f"{head}: ours fp32 / CTranslate2 int8 ({r['ctranslate2_int8_fastest_setting']}) tok/s",
         f"{r['ours_beam_tok_s']:,} / {r['ctranslate2_int8_beam_tok_s']:,} = "
         f"{_x(r['beam_speedup_vs_ctranslate2_int8'])}", ""],
        [f"{head}, int8: ours (--quantize int8) / CTranslate2 int8 tok/s",
         "not measured in this run: `make bench`" if int8 is None else
         f"{r.get('ours_int8_beam_tok_s', 0):,} / {r['ctranslate2_int8_beam_tok_s']:,} = {_x(int8)}",
         "≥ 0.67×" if int8 is None else _target(int8, 0.67, "≥ 0.67×")],
        [f"greedy outputs identical to CTranslate2's, {r['ctranslate2_agreement_sources']} sources "
         f"({r['ctranslate2_agreement_distinct_outputs']} distinct outputs); int8",
         f"**{r['ctranslate2_same_output']:.1%}** (log-probabilities within "
         f"{r['ctranslate2_max_logprob_diff']:.1g}); int8 {r['ctranslate2_int8_same_output']:.1%}",
         _target(r["ctranslate2_same_output"], 1.0, "100 %")],
        ["CTranslate2, every setting timed (s)", ", ".join(settings), ""],
    ]


GPU_PENDING = ("**GPU figures are pending**: no GPU has run `bash benchmarks/gpu.sh` yet (Transformer-base in bf16, "
               "the recipes' tokens/s; [docs/benchmarks.md](docs/benchmarks.md)). Its code paths are tested on CPU "
               "with tiny shapes (`tests/test_gpu_bench.py`), the GPU training path's too (`tests/test_gpu_path.py`, "
               "whose CUDA runs skip without a GPU).\n")


def gpu(root: Path) -> str:
    """``results["gpu"]`` of ``benchmarks/results.json``: one table per GPU that ran ``benchmarks/gpu.sh``,
    or the sentence that GPU figures are pending."""
    if not (root / BENCH).is_file():
        return _missing(BENCH, "make bench")
    entries = read_json(root / BENCH).get("gpu") or {}
    if not entries:
        return GPU_PENDING
    return "\n".join(gpu_table(entry) for entry in entries.values())


def gpu_table(e: dict[str, Any]) -> str:
    """One GPU's entry (benchmarks/gpu_results.py): Transformer-base's MFU, the recipes' tok/s, `make bench`'s MFU."""
    rows = _transformer_base_rows(e["transformer_base"])
    recipes = e["recipes"]
    for name, r in recipes.get("recipes", {}).items():
        m = r["model"]
        synthetic = "; synthetic batches" if r["data"].startswith("synthetic") else ""
        rows.append([f"{name} recipe (d_model {m['d_model']}, {m['enc_layers']}+{m['dec_layers']} layers, "
                     f"{r['batch_tokens']:,}-token batches, {r['precision']}): training tok/s",
                     f"**{r['tok_s']:,}** (MFU {_small_share(r['mfu'])}{synthetic})", ""])
    if "missing" in recipes:
        rows.append(["the recipes' training tok/s", f"not measured: {recipes['missing']}", ""])
    bench = e["bench"]
    if "mfu" in bench:
        rows.append(["`make bench`'s training step, length 128: ours / `nn.Transformer` tok/s; MFU",
                     f"{bench['train_tok_s']:,} / {bench['torch_transformer_tok_s']:,} = "
                     f"{_x(bench['train_speedup_vs_torch'])}; {bench['mfu']:.1%}", ""])
    elif "missing" in bench:
        rows.append(["`make bench` on the GPU", f"not measured: {bench['missing']}", ""])
    return (_table(["measurement", "result", "target"], rows)
            + f"\n`{e['command']}` on {e['device']}, torch {e['versions'].get('torch')}, {e['date'][:10]}.\n")


def _small_share(x: float) -> str:
    """A share as a percentage to one decimal, or to two significant digits below 0.1 % (not "0.0%")."""
    return f"{x:.1%}" if x >= 0.001 else f"{x * 100:.2g}%"


def _transformer_base_rows(b: dict[str, Any]) -> list[list[str]]:
    """The best variant's MFU against the target, then every variant's (benchmarks/transformer_base.py)."""
    if "missing" in b:
        return [["Transformer-base, bf16: best MFU", f"not measured: {b['missing']}", "≥ 40 %"]]
    m = b["model"]
    what = (f"Transformer-base (d_model {m['d_model']}, {m['enc_layers']}+{m['dec_layers']} layers, vocabulary "
            f"{m['vocab']:,}, {m['batch_tokens']:,}-token batches{', --quick' if b.get('quick') else ''}), "
            f"{b['precision']}, {b['optimizer']}: best MFU of the variants")
    if b["best"] is None:
        return [[what, "no variant finished", "≥ 40 %"]]
    peak = f"{b['peak_flops'] / 1e12:,.0f} TFLOP/s measured {b['peak_flops_dtype']}"
    if b.get("theoretical_peak_flops"):
        peak += f" (datasheet {b['theoretical_peak_flops'] / 1e12:,.0f})"
    best = b["variants"][b["best"]]
    achieved = best["step_flops"] / best["step_s"]
    result = (f"**{b['best_mfu']:.1%}** ({b['best']}, {b['best_tok_s']:,} tok/s, {achieved / 1e12:,.0f} TFLOP/s) "
              f"of {peak}")
    target = f"≥ {b['target_mfu'] * 100:.0f} %"
    if "peak_timing" in b or not b.get("theoretical_peak_flops"):  # a GPU's peak from CUDA events, or a CPU's
        verdict = _target(b["best_mfu"], b["target_mfu"], target)
    else:  # a GPU run from before the peak's CUDA-event timing: its peak reads low, its MFU high
        verdict = (f"{target}: not judged, the peak was timed with a host sync per product, which reads it low "
                   f"(nmt.flops.measure_peak_flops now times it with CUDA events); of the datasheet's peak, "
                   f"{achieved / b['theoretical_peak_flops']:.1%}")
    others = [f"{name} {v['mfu']:.1%} ({v['tok_s']:,} tok/s)" for name, v in b["variants"].items()]
    others += [f"{name}: {why}" for name, why in {**b["skipped"], **b["failed"]}.items()]
    return [[what, result, verdict], ["Transformer-base, every variant: MFU (tok/s)", "; ".join(others), ""]]


def scaling(root: Path) -> str:
    """``results/scaling.json``: one process accumulating vs several processes, and throughput."""
    if not (root / SCALING).is_file():
        return _missing(SCALING, "bash benchmarks/ddp_scaling.sh")
    r = read_json(root / SCALING)
    eq, tp = r["equivalence"], r["throughput"]
    one, two, nodes = (eq["runs"][k] for k in ("one_process", "two_processes", "two_nodes"))
    same = "the same" if one["train_loss"] == two["train_loss"] == nodes["train_loss"] else "different"
    rows = [
        [f"1 process accumulating 2 batches vs `torchrun --nproc_per_node=2`, dropout 0, {eq['steps']} steps",
         f"train loss {one['train_loss']} / {two['train_loss']}, dev loss {one['dev_loss']} / {two['dev_loss']}; "
         f"weights differ by at most **{eq['max_weight_diff_two_processes']:.1e}**"],
        ["the same vs two `torchrun --nnodes=2` agents (c10d rendezvous over TCP on 127.0.0.1), one process each",
         f"world size {nodes['world_size']}, {same} train losses, weights within "
         f"**{eq['max_weight_diff_two_nodes']:.1e}** of the 1-process run"],
        [f"throughput: 1 process × 2 threads, {tp['one_process']['steps']} steps vs 2 processes × 1 thread, "
         f"{tp['two_processes']['steps']} steps (same tokens)",
         f"{tp['one_process']['train_tokens_per_s']:,} vs {tp['two_processes']['train_tokens_per_s']:,} target tok/s"],
    ]
    return (_table(["run", "result"], rows)
            + f"\n`{r['command']}` at commit {r['commit'][:7]}, {_machine(r['machine'])}, {_minutes(r['seconds'])}.\n")


# --------------------------------------------------------------------------- profiles of the misses
def _pct(share: float) -> str:
    return f"{share:.0%}"


def _ops(ops: list[dict], n: int = 3) -> str:
    return ", ".join(f"`{o['op'].removeprefix('aten::')}` {_pct(o['share'])}" for o in ops[:n])


def _training_rows(t: dict) -> list[list[str]]:
    rows = []
    for length, r in t["by_length"].items():
        ours, theirs = r["ours"], r["torch"]
        gap = ", ".join(f"`{g['op'].removeprefix('aten::')}` {g['ours_ms']:,.0f} / {g['theirs_ms']:,.0f}"
                        for g in r["gap"][:3])
        rows.append([f"training, length {length}: ours / `nn.Transformer` {_x(r['speedup_vs_torch'])} (≥ 1.2×)",
                     f"matmuls {_pct(ours['matmul_share'])} of our step ({ours['matmul_ms']:,.0f} ms of "
                     f"{ours['profiled_wall_ms']:,.0f}), {_pct(theirs['matmul_share'])} of theirs; our largest "
                     f"others, ms ours / theirs: {gap}",
                     f"{_x(r['bound_vs_torch'])} with nothing outside our matmuls"])
    headline = t["by_length"][list(t["by_length"])[-1]]
    m = headline["mfu"]
    rows.append([f"MFU, length {headline['length']}: **{m['mfu']:.1%}** (≥ 60 %)",
                 f"matmuls {_pct(m['matmul_share_of_step'])} of the step × running at "
                 f"{_pct(m['matmul_efficiency'])} of the {m['peak_flop_s'] / 1e9:,.0f} GFLOP/s peak "
                 f"({m['matmul_flop_s'] / 1e9:,.0f} GFLOP/s) × {_pct(m['useful_share'])} of their FLOPs counted by MFU",
                 f"**{m['mfu_if_only_matmuls']:.1%}** for a step of nothing but its matmuls"])
    return rows


def _beam_rows(b: dict) -> list[list[str]]:
    rows = []
    for kind in ("fp32", "int8"):
        r, ours = b[kind], b[kind]["ours"]
        rows.append([f"beam {b['beam']} × {b['sources']} sources × {b['output_tokens']} tokens, {kind}: ours / "
                     f"CTranslate2 ({r['ctranslate2_setting']}) {_x(r['ratio'])} (≥ 0.67×)",
                     f"our {ours['profiled_wall_ms']:,.0f} ms: matmuls {_pct(ours['matmul_share'])}, other operators "
                     f"{_pct(ours['op_share'] - ours['matmul_share'])} (top: {_ops(ours['top_ops'])}), outside any "
                     f"operator (Python, dispatch) {_pct(1 - ours['op_share'])}; CTranslate2 "
                     f"{r['ctranslate2_wall_ms']:,.0f} ms",
                     f"{_x(r['bound_no_overhead'])} with no time outside operators, {_x(r['bound_matmul_only'])} "
                     "with matmuls only"])
    return rows


def _int8_rows(r: dict) -> list[list[str]]:
    fp32, q8 = r["fp32"], r["int8"]
    return [[f"int8 decoding, {r['n']:,} test descriptions: int8 / float32 {_x(r['speedup'])} (≥ 1.5×)",
             f"the layers int8 quantizes take {_pct(fp32['linear_share'])} of the float32 decode; int8 runs them in "
             f"{r['linear_time_ratio']:.2f}× the time, and they are then {_pct(q8['linear_share'])} of the int8 "
             f"decode (its largest operators: {_ops(q8['top_ops'])})",
             f"{_x(r['amdahl_bound'])} with infinitely fast linear layers (Amdahl)"]]


def profiles(root: Path) -> str:
    """``results/profiles.json``: each missed speed target, what its profile shows, and the bound it implies."""
    if not (root / PROFILES).is_file():
        return _missing(PROFILES, "python -m benchmarks.profiles")
    r = read_json(root / PROFILES)
    rows = _training_rows(r["training"])
    for key, section_rows, what in (("beam_vs_ctranslate2", _beam_rows, "beam search vs CTranslate2"),
                                    ("int8", _int8_rows, "int8 decoding")):
        section = r[key]
        rows += [[what, section["skipped"], ""]] if "skipped" in section else section_rows(section)
    return (_table(["miss (this run)", "what the profile shows", "bound"], rows)
            + f"\n`{r['command']}` at commit {r['commit'][:7]}{' (uncommitted changes)' if r['dirty'] else ''} on "
            f"{r['date'][:10]}, {_machine(r['machine'])}, {_minutes(r['seconds'])}.\n")


def seed_comparisons(root: Path) -> str:
    """Each ``results/seeds-NAME.json`` (``python -m benchmarks.seeds``): two commits of the default
    pipeline trained seed by seed, the selection split's last evaluation and the test split per seed,
    their means, and the verdict of the rule the comparison was run under."""
    paths = sorted(root.glob("results/seeds-*.json"))
    if not paths:
        return _missing(Path("results/seeds-NAME.json"),
                        "python -m benchmarks.seeds NAME --arm old=COMMIT --arm new=COMMIT --seeds N ...")
    out = []
    for path in paths:
        r = read_json(path)
        (base, a), (other, b) = r["arms"].items()
        label = {base: f"{base} ({a['commit'][:7]})", other: f"{other} ({b['commit'][:7]})"}

        def cells(run: dict) -> list[str]:
            return [f"{run['dev_loss']:.4f}", f"{run['dev_exact_match']:.1f}", f"{run['test_exact_match']:.1f}"]

        rows = [[str(s), *cells(a["runs"][str(s)]), *cells(b["runs"][str(s)])] for s in r["seeds"]]
        rows.append([f"mean of {len(r['seeds'])}", *cells(r["means"][base]), *cells(r["means"][other])])
        header = ["seed", *(f"{label[arm]}: {what}" for arm in (base, other)
                            for what in ("dev loss", "dev exact match %", "test exact match %"))]
        rule = r["rule"]
        verdict = (f"**{other} adopted**" if r["adopted"] else f"**{other} not adopted**, {base} kept")
        out.append(f"`{path.name}`: {r['question']}\n\n" + _table(header, rows)
                   + f"\nDev is the selection split at its last evaluation (step {a['runs'][str(r['seeds'][0])]['step']:,}), "
                   f"greedy; test is the pipeline's reported decoding. The rule, fixed before the runs: adopt {other} iff "
                   f"its mean dev loss rises by at most {rule['max_loss_rise']} and its mean dev exact match falls by "
                   f"at most {rule['max_exact_match_drop']} points. Measured: dev loss {r['dev_loss_rise']:+.4f}, dev "
                   f"exact match {-r['dev_exact_match_drop']:+.2f}: {verdict}. Test exact match (not deciding) is lower "
                   f"with {other} on {r['test_exact_match_lower_on']} of {len(r['seeds'])} seeds. `{r['command']}` on "
                   f"{r['date']}, {_machine(r['machine'])}.\n")
    return "\n".join(out)


RENDERERS: dict[str, Callable[[Path], str]] = {
    "default-results": default_results,
    "default-curve": default_curve,
    "default-examples": default_examples,
    "default-ablation": default_ablation,
    "django-results": django_results,
    "django-curve": django_curve,
    "django-errors": django_errors,
    "django-reranking": django_reranking,
    "django-runs": django_runs,
    "django-levers": django_levers,
    "sweep": sweep,
    "published": published,
    "benchmarks": benchmarks,
    "gpu": gpu,
    "scaling": scaling,
    "profiles": profiles,
    "seed-comparisons": seed_comparisons,
}


def render(text: str, root: Path) -> str:
    """``text`` with every marked section rendered anew; an unknown section name is an error."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise KeyError(f"section <!-- report:{name} --> has no renderer (known: {', '.join(RENDERERS)})")
        return match.group(1) + RENDERERS[name](root) + match.group(4)

    return MARKER.sub(replace, text)


def documents(root: Path) -> list[Path]:
    """The files tables are rendered into: the README and every page of docs/."""
    return [root / README, *sorted((root / DOCS).glob("*.md"))]


def main(root: Path = Path(".")) -> None:
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        new = render(text, root)
        if new != text:
            atomic_write_text(path, new)
        print(f"{path}: {'updated' if new != text else 'up to date'}", file=sys.stderr)


if __name__ == "__main__":
    main()
