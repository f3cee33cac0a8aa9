"""Shared fixtures: a small learnable synthetic dataset and a tiny exported model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

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
    cfg = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=64)
    model = Transformer(cfg, tok.vocab_size, tok.pad_id)
    save_model(model, out / "model.safetensors", out / "config.json", tok.bos_id, tok.eos_id)
    tok.save(out / "tokenizer.json")
    return out
