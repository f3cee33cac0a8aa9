"""`Translator`: a trained model, its tokenizer and the decoders, behind one call.

    from nmt import Translator
    t = Translator.from_pretrained("models/export")
    t.translate(["return the absolute value of x"], beam_size=4, n_best=2)

It is what `nmt generate`, `nmt evaluate` and the evaluate stage use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from nmt.batching import pad, source_ids
from nmt.checkpoint import load_model
from nmt.decode import Hypothesis, beam_search, greedy
from nmt.errors import ModelFileError
from nmt.model import Transformer
from nmt.tokenizer import Tokenizer

EXPORT_FILES = ("model.safetensors", "config.json", "tokenizer.json")


@dataclass
class Translation:
    text: str
    score: float
    n_best: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    truncated: bool = False  # the input was longer than the model accepts and was cut


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelFileError("--device cuda was asked for, but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


class Translator:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, bos_id: int, eos_id: int):
        if model.vocab_size != tokenizer.vocab_size:
            raise ModelFileError(
                f"model vocabulary ({model.vocab_size}) does not match the tokenizer's ({tokenizer.vocab_size})"
            )
        self.model, self.tokenizer = model.eval(), tokenizer
        self.bos_id, self.eos_id = bos_id, eos_id

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @classmethod
    def from_files(cls, weights: Path, config: Path, tokenizer: Path, device: str = "auto") -> "Translator":
        model, cfg = load_model(Path(weights), Path(config), resolve_device(device))
        return cls(model, Tokenizer.load(Path(tokenizer)), cfg["bos_id"], cfg["eos_id"])

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "auto") -> "Translator":
        """Load an exported model directory (model.safetensors, config.json, tokenizer.json)."""
        d = Path(model_dir)
        if not d.is_dir():
            raise ModelFileError(f"{d}: model directory not found (run `dvc repro` to create models/export)")
        for name in EXPORT_FILES:
            if not (d / name).is_file():
                raise ModelFileError(f"{d / name}: missing; a model directory needs {', '.join(EXPORT_FILES)}")
        return cls.from_files(d / "model.safetensors", d / "config.json", d / "tokenizer.json", device)

    def translate(
        self,
        texts: list[str],
        beam_size: int = 1,
        n_best: int = 1,
        max_len: int = 200,
        length_penalty: float = 0.6,
        batch_size: int = 64,
    ) -> list[Translation]:
        """Translate each text; greedy when ``beam_size == 1``, else batched beam search."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best}")
        limit = self.model.cfg.max_len
        encoded = self.tokenizer.encode_batch(texts)
        sources = [source_ids(ids, self.eos_id, limit) for ids in encoded]
        order = sorted(range(len(texts)), key=lambda i: len(sources[i]))  # similar lengths share a batch
        results: list[Translation | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            src = pad([sources[i] for i in chunk], self.model.pad_id).to(self.device)
            for i, hyps in zip(chunk, self._decode(src, beam_size, n_best, max_len, length_penalty)):
                decoded = [(self.tokenizer.decode(h.tokens), h.score) for h in hyps]
                results[i] = Translation(decoded[0][0], decoded[0][1], decoded, len(encoded[i]) >= limit)
        return results  # type: ignore[return-value]

    def _decode(self, src: torch.Tensor, beam_size: int, n_best: int, max_len: int,
                alpha: float) -> list[list[Hypothesis]]:
        src_mask = src != self.model.pad_id
        if beam_size == 1:
            return [[h] for h in greedy(self.model, src, src_mask, self.bos_id, self.eos_id, max_len)]
        return beam_search(self.model, src, src_mask, self.bos_id, self.eos_id, max_len,
                           beam_size=beam_size, alpha=alpha, n_best=n_best)
