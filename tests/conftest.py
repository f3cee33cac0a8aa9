"""Shared fixtures: a small learnable synthetic dataset and a tiny exported model."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def fuzz_examples(default: int) -> int:
    """Hypothesis examples of a `fuzz` test: ``default`` in the normal suite, NMT_FUZZ_EXAMPLES in `make fuzz`."""
    return int(os.environ.get("NMT_FUZZ_EXAMPLES") or default)

NAMES = ["x", "y", "value", "count", "items", "name", "total", "path", "data", "key"]
TEMPLATES = [
    ("return the sum of {a} and {b}", "return {a} + {b}"),
    ("return the absolute value of {a}", "return abs({a})"),
    ("return the length of {a}", "return len({a})"),
    ("set {a} to {b}", "{a} = {b}"),
    ("return {a} times {b}", "return {a} * {b}"),
    ("print {a}", "print({a})"),
]


def synthetic_pairs(n: int, seed: int) -> list[dict[str, str]]:
    """Description -> one line of Python, from a few templates over a few names (learnable in seconds)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        nl, code = rng.choice(TEMPLATES)
        a, b = rng.sample(NAMES, 2)
        pairs.append({"nl": nl.format(a=a, b=b), "code": code.format(a=a, b=b)})
    return pairs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# The tokenize levers off, whatever params.yaml's default: tests turn on the ones they are about.
PLAIN_TOKENIZE = {"string_placeholders": False, "name_placeholders": False, "rare_words": 0,
                  "placeholder_tokens": False, "neighbour_code": False}


def plain_tokenize(**options: object):
    """A TokenizeConfig with every placeholder lever off unless ``options`` turns it on."""
    from nmt.config import TokenizeConfig

    return TokenizeConfig(**{**PLAIN_TOKENIZE, **options})


def tokenized_data(root: Path, sizes: tuple[int, int, int]) -> Path:
    """``root/tokenized`` of synthetic train, dev and test pairs, made in-process (no DVC, no download)."""
    from nmt.stages.tokenize import tokenize_dataset

    for split, n, seed in zip(("train", "dev", "test"), sizes, (0, 1, 2)):
        write_jsonl(root / "raw" / f"{split}.jsonl", synthetic_pairs(n, seed))
    tokenize_dataset(root / "raw", root / "tokenized", plain_tokenize(min_freq=1))
    return root / "tokenized"


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """An exported model directory with random weights: enough to exercise loading and the CLI."""
    from nmt.checkpoint import save_model
    from nmt.config import ModelConfig
    from nmt.model import Transformer
    from nmt.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("export")
    pairs = synthetic_pairs(50, seed=0)
    tok = Tokenizer.build([p["nl"] for p in pairs] + [p["code"] for p in pairs], min_freq=1, max_vocab=1000)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=64,
                      copy=False)
    model = Transformer(cfg, tok.vocab_size, tok.pad_id)
    save_model(model, out / "model.safetensors", out / "config.json", tok.bos_id, tok.eos_id)
    tok.save(out / "tokenizer.json")
    return out


# --------------------------------------------------------------------------- a real DVC repo
# Every lever is set here, off, whatever params.yaml's default: the tests turn them on one by one.
TINY = {
    "data": {"source": "jsonl", "max_code_tokens": 64},
    "tokenize": {"min_freq": 1, **PLAIN_TOKENIZE},
    "model": {"d_model": 32, "n_heads": 2, "enc_layers": 1, "dec_layers": 1, "d_ff": 64, "max_len": 64,
              "dropout": 0.1, "word_dropout": 0.0, "copy": False},
    "train": {"max_steps": 40, "batch_tokens": 600, "warmup_steps": 10, "lr": 3e-3, "eval_every": 20,
              "eval_examples": 200, "eval_max_len": 16, "threads": 1, "ema_decay": 0.0, "patience": 0},
    "reverse": {"max_steps": 0},
    "evaluate": {"max_len_b": 16, "n_examples": 3, "beam_size": 4, "rerank": "none", "literal_prefixes": False,
                 "rerank_reconstruction": 0.0},
    "mlflow": {"system_metrics_interval_s": 1.0},
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) else v
    return out


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# What a DVC repo's commands need: this venv first on PATH, no analytics, a git identity.
REPO_ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def tiny_pipeline(root: Path, sizes: tuple[int, int, int] = (120, 12, 12), override: dict | None = None) -> dict:
    """The code, dvc.yaml and synthetic inputs/ of a tiny pipeline in ``root``; its params (TINY,
    then ``override``), unwritten."""
    for name in ("nmt", "pipeline"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root)
    for split, n, seed in zip(("train", "dev", "test"), sizes, (0, 1, 2)):
        write_jsonl(root / "inputs" / f"{split}.jsonl", synthetic_pairs(n, seed))
    params = merge(merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY), override or {})
    params["data"]["jsonl"] = {s: f"inputs/{s}.jsonl" for s in ("train", "dev", "test")}
    return params


def build_pipeline_repo(root: Path, override: dict | None = None) -> dict:
    """A git + DVC repo of this project at ``root``, on the TINY params (then ``override``), its
    pipeline run once with `dvc repro` (outputs not committed). Returns the environment to run in."""
    root.mkdir(parents=True, exist_ok=True)
    params = tiny_pipeline(root, override=override)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, **REPO_ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n__pycache__/\n")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "pipeline"], root, env)
    run(["dvc", "repro"], root, env)
    return env


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pipeline")
    return root, build_pipeline_repo(root)


@pytest.fixture(scope="session")
def trained_tiny_export(tmp_path_factory) -> Path:
    """An exported copy model (pointer-generator on) trained for a few seconds on synthetic pairs:
    it decodes the templates right, so its outputs are code, short, and worth comparing."""
    from nmt.batching import collate
    from nmt.checkpoint import save_model
    from nmt.config import ModelConfig
    from nmt.model import Transformer, target_nll
    from nmt.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("trained-export")
    pairs = synthetic_pairs(300, seed=0)
    tok = Tokenizer.build([p["nl"] for p in pairs] + [p["code"] for p in pairs], min_freq=1, max_vocab=1000)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=64, copy=True)
    model = Transformer(cfg, tok.vocab_size, tok.pad_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    srcs, tgts = tok.encode_batch([p["nl"] for p in pairs]), tok.encode_batch([p["code"] for p in pairs])
    for step in range(150):
        rows = [(step * 32 + i) % len(pairs) for i in range(32)]
        b = collate([srcs[i] for i in rows], [tgts[i] for i in rows], tok.pad_id, tok.bos_id, tok.eos_id, cfg.max_len)
        loss = target_nll(model, tok.pad_id, b.src, b.src_mask, b.tgt_in, b.tgt_out) / b.n_tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_model(model.eval(), out / "model.safetensors", out / "config.json", tok.bos_id, tok.eos_id)
    tok.save(out / "tokenizer.json")
    return out
