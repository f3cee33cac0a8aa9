"""`Translator`: a trained model, its tokenizer and the decoders, behind one call.

    from nmt import Translator
    t = Translator.from_pretrained("models/export")
    t.translate(["return the absolute value of x"], beam_size=4, n_best=2)
    t.translate(["return the absolute value of x"], sample=True, top_p=0.9, n_best=5, seed=0)

It is what `nmt generate`, `nmt evaluate` and the evaluate stage use. On its own it

- masks the inputs and restores the outputs when the model was trained with string placeholders
  (the tokenizer file says so; :mod:`nmt.placeholders`);
- decodes with the model directory's decoding defaults (config.json ``"decoding"``, written by the
  export stage from the evaluate stage's settings) for every option the caller leaves out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nmt.batching import pad, source_ids
from nmt.checkpoint import load_model
from nmt.config import RERANK_CHOICES, EvaluateConfig, decoding_of
from nmt.decoding.search import (
    Hypothesis,
    beam_search,
    check_sampling,
    greedy,
    length_limit,
    sample,
)
from nmt.errors import InputTooLongError, ModelFileError
from nmt.model import Transformer
from nmt.placeholders import Masked, add_described_prefixes, mask_description, restore
from nmt.decoding.reconstruction import reconstruction_scores
from nmt.decoding.rerank import LEXICON_FILE, LexicalWeights, Lexicon, rerank_order
from nmt.tokenizer import Tokenizer

EXPORT_FILES = ("model.safetensors", "config.json", "tokenizer.json")  # and LEXICON_FILE where written
REVERSE_FILES = ("reverse.safetensors", "reverse.json")  # the reverse model, where one was trained


@dataclass
class Translation:
    text: str
    score: float
    n_best: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first
    truncated: bool = False  # the input was longer than the model accepts and was cut
    # log P(description | hypothesis) of each n_best entry under the reverse model, when reranking asked for it
    reconstruction: list[float] | None = None


@dataclass(frozen=True)
class DecodeSettings:
    """How :meth:`Translator.translate` decodes (see there); :meth:`check` names the first bad option."""

    beam_size: int = 1
    n_best: int = 1
    max_len_a: float = 0.0
    max_len_b: int = 200
    length_penalty: float = 0.6
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    rerank: str = "none"
    rerank_missing: float = 0.0
    rerank_unexplained: float = 0.0
    rerank_repeated: float = 0.0
    rerank_reconstruction: float = 0.0
    literal_prefixes: bool = False

    def check(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.n_best < 1:
            raise ValueError(f"n_best must be >= 1, got {self.n_best}")
        if self.sample and self.beam_size != 1:
            raise ValueError(f"beam_size must be 1 when sampling (n_best sets the samples), got {self.beam_size}")
        if not self.sample and self.n_best > self.beam_size:
            raise ValueError(f"n_best must be <= beam_size={self.beam_size}, got {self.n_best}")
        if not (math.isfinite(self.max_len_a) and self.max_len_a >= 0):
            raise ValueError(f"max_len_a must be a finite number >= 0, got {self.max_len_a}")
        if self.max_len_b < 1:
            raise ValueError(f"max_len_b must be >= 1, got {self.max_len_b}")
        if self.rerank not in RERANK_CHOICES:
            raise ValueError(f"rerank must be one of {', '.join(RERANK_CHOICES)}, got {self.rerank!r}")
        for name in ("rerank_missing", "rerank_unexplained", "rerank_repeated", "rerank_reconstruction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        check_sampling(self.temperature, self.top_k, self.top_p)

    @property
    def weights(self) -> LexicalWeights:
        return LexicalWeights.of(self)

    @property
    def reconstructs(self) -> bool:
        """Whether reranking asks the reverse model how well each hypothesis gives its description back."""
        return self.rerank == "lexical" and self.rerank_reconstruction > 0


# What the decoding options a caller leaves out default to, unless the model directory says otherwise:
# plain greedy search without reranking (which needs an export's lexicon), whatever the evaluate
# section of params.yaml now defaults to, so exports without decoding defaults decode as they did.
BUILTIN_DECODING = decoding_of(replace(EvaluateConfig(), beam_size=1, rerank="none", literal_prefixes=False,
                                      rerank_reconstruction=0.0, max_len_a=0.0, max_len_b=200))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelFileError("--device cuda was asked for, but no CUDA device is available (use auto or cpu)")
    return torch.device(name)


class Translator:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, bos_id: int, eos_id: int,
                 decoding: dict[str, Any] | None = None, lexicon: Lexicon | None = None,
                 reverse: Transformer | None = None):
        for name, m in (("model", model), ("reverse model", reverse)):
            if m is not None and m.vocab_size != tokenizer.vocab_size:
                raise ModelFileError(
                    f"{name} vocabulary ({m.vocab_size}) does not match the tokenizer's ({tokenizer.vocab_size})"
                )
        self.model, self.tokenizer = model.eval(), tokenizer
        if tokenizer.placeholder_ids:  # an output uses only the placeholders of its own description
            model.restrict_to_source(tokenizer.placeholder_ids)
        self.bos_id, self.eos_id = bos_id, eos_id
        # Defaults of beam_size, length_penalty, max_len_a, max_len_b and rerank.
        self.decoding = {**BUILTIN_DECODING, **(decoding or {})}
        self.lexicon = lexicon  # the training pairs' word counts, for rerank="lexical"
        self.reverse = None if reverse is None else reverse.eval()  # code -> description, for rerank_reconstruction

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @classmethod
    def from_files(cls, weights: Path, config: Path, tokenizer: Path, device: str = "auto",
                   lexicon: Path | None = None, reverse: tuple[Path, Path] | None = None) -> Translator:
        """``reverse``: the reverse model's (weights, config) files."""
        model, cfg = load_model(Path(weights), Path(config), resolve_device(device))
        reverse_model = None if reverse is None else load_model(*map(Path, reverse), resolve_device(device))[0]
        return cls(model, Tokenizer.load(Path(tokenizer)), cfg["bos_id"], cfg["eos_id"], cfg.get("decoding"),
                   None if lexicon is None else Lexicon.load(lexicon), reverse_model)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "auto") -> Translator:
        """Load an exported model directory (model.safetensors, config.json, tokenizer.json, and
        lexicon.json and reverse.safetensors + reverse.json where the export stage wrote them)."""
        d = Path(model_dir)
        if not d.is_dir():
            raise ModelFileError(f"{d}: model directory not found (run `dvc repro` to create models/export)")
        for name in EXPORT_FILES:
            if not (d / name).is_file():
                raise ModelFileError(f"{d / name}: missing; a model directory needs {', '.join(EXPORT_FILES)}")
        lexicon = d / LEXICON_FILE
        reverse = tuple(d / name for name in REVERSE_FILES)
        if any(p.is_file() for p in reverse) and not all(p.is_file() for p in reverse):
            raise ModelFileError(f"{d}: the reverse model needs both {' and '.join(REVERSE_FILES)}; re-export the model")
        return cls.from_files(d / "model.safetensors", d / "config.json", d / "tokenizer.json", device,
                              lexicon if lexicon.is_file() else None, reverse if reverse[0].is_file() else None)

    def settings(self, sample: bool = False, **given: Any) -> DecodeSettings:
        """The decode settings of a call: ``given`` options that are not None, else the model's defaults.

        When sampling, beam_size and rerank default to 1 and none: the defaults describe a search.
        """
        defaults = {**self.decoding, **({"beam_size": 1, "rerank": "none"} if sample else {})}
        chosen = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        return DecodeSettings(sample=sample, **chosen)

    def translate(
        self,
        texts: list[str],
        beam_size: int | None = None,
        n_best: int = 1,
        max_len_a: float | None = None,
        max_len_b: int | None = None,
        length_penalty: float | None = None,
        batch_size: int = 64,
        sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        strict: bool = False,
        on_batch: Callable[[int], None] | None = None,
        rerank: str | None = None,
        literal_prefixes: bool | None = None,
    ) -> list[Translation]:
        """Translate each text: greedy (``beam_size == 1``), batched beam search, or sampling.

        beam_size, max_len_a, max_len_b, length_penalty, rerank and literal_prefixes left as None take
        the model directory's decoding defaults (:attr:`decoding`; greedy, 0, 200, 0.6, none, off
        without them), as the lexical reranker's weights always do.

        Texts are sorted by length into batches of ``batch_size``. A batch's outputs are at most
        ``floor(max_len_a * S) + max_len_b`` tokens, S the length of its longest source (EOS
        included), capped by the model's ``max_len``.

        ``sample=True`` draws ``n_best`` samples per text (temperature, top_k, top_p: see
        :func:`nmt.decoding.search.sample`), best score first; ``seed`` makes the draws repeatable for the
        same texts, batch size and device. Otherwise ``n_best <= beam_size`` hypotheses come back.

        ``rerank="syntax"`` decodes the beam's (or the samples') full n-best list and puts the
        hypotheses that are valid Python first (:func:`nmt.decoding.rerank.rerank_candidates`): ``text`` is the
        best-scoring valid one, or the best one when none is valid. ``rerank="lexical"`` also
        weighs each hypothesis against its description's words, and needs :attr:`lexicon`; with a
        ``rerank_reconstruction`` weight (a model default) it also asks the reverse model
        (:attr:`reverse`) how well each hypothesis gives its description back.
        ``literal_prefixes`` puts the ``r`` / ``b`` of a literal the description calls a raw / bytes
        string on the output's copy of it (:func:`nmt.placeholders.add_described_prefixes`).

        A text longer than the model's source limit is cut to fit and flagged ``truncated``; with
        ``strict=True`` it raises :class:`~nmt.errors.InputTooLongError` (a ValueError) naming its
        index instead. Bad options raise ValueError naming the option. ``on_batch`` is called with
        the number of texts of each batch once it is decoded (a progress bar's hook).
        """
        settings = self.settings(sample, beam_size=beam_size, n_best=n_best, max_len_a=max_len_a,
                                 max_len_b=max_len_b, length_penalty=length_penalty, temperature=temperature,
                                 top_k=top_k, top_p=top_p, rerank=rerank, literal_prefixes=literal_prefixes)
        settings.check()
        if settings.rerank == "lexical" and self.lexicon is None:
            raise ModelFileError(f"rerank 'lexical' needs the model's {LEXICON_FILE} (written by the tokenize stage, "
                                 "copied by the export stage): re-export the model, or rerank by syntax")
        if settings.reconstructs and self.reverse is None:
            raise ModelFileError(f"rerank_reconstruction {settings.rerank_reconstruction} needs a reverse model "
                                 f"({' + '.join(REVERSE_FILES)}: train one with reverse.max_steps > 0 and re-export), "
                                 "or set the weight to 0")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        limit = self.model.cfg.max_len
        masked = [mask_description(t, self.tokenizer.name_placeholders, self.tokenizer.common_words)
                  if self.tokenizer.string_placeholders
                  else None for t in texts]
        encoded = self.tokenizer.encode_batch([t if m is None else m.text for t, m in zip(texts, masked)])
        if strict:
            _refuse_long(encoded, limit)
        sources = [source_ids(ids, self.eos_id, limit) for ids in encoded]
        order = sorted(range(len(texts)), key=lambda i: len(sources[i]))  # similar lengths share a batch
        results: list[Translation | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            src = pad([sources[i] for i in chunk], self.model.pad_id).to(self.device)
            found = self._decode(src, settings, generator)
            rec = self._reconstruction(found, [encoded[i] for i in chunk]) if settings.reconstructs else None
            for k, (i, hyps) in enumerate(zip(chunk, found)):
                results[i] = self._finish(texts[i], masked[i], hyps, None if rec is None else rec[k],
                                          len(encoded[i]) >= limit, settings)
            if on_batch is not None:
                on_batch(len(chunk))
        return results  # type: ignore[return-value]

    def _finish(self, text: str, masked: Masked | None, hyps: list[Hypothesis], rec: list[float] | None,
                truncated: bool, settings: DecodeSettings) -> Translation:
        """One input's Translation: detokenize its hypotheses, restore its literals, rerank the n-best."""
        literals = masked.literals if masked is not None else []
        decoded = [(restore(self.tokenizer.decode(h.tokens), literals), h.score) for h in hyps]
        if settings.literal_prefixes:
            decoded = [(add_described_prefixes(text, out), score) for out, score in decoded]
        ranked = rerank_order(decoded, settings.rerank, text, self.lexicon, settings.weights, rec)[: settings.n_best]
        best = [decoded[j] for j in ranked]
        return Translation(best[0][0], best[0][1], best, truncated, None if rec is None else [rec[j] for j in ranked])

    def _reconstruction(self, found: list[list[Hypothesis]], sources: list[list[int]]) -> list[list[float]]:
        """log P(source | hypothesis) under the reverse model, per hypothesis of each source."""
        flat = reconstruction_scores(self.reverse, [(h.tokens, src) for hyps, src in zip(found, sources) for h in hyps],
                                     self.bos_id, self.eos_id)
        out, start = [], 0
        for hyps in found:
            out.append(flat[start : start + len(hyps)])
            start += len(hyps)
        return out

    def _decode(self, src: torch.Tensor, s: DecodeSettings,
                generator: torch.Generator | None) -> list[list[Hypothesis]]:
        src_mask = src != self.model.pad_id
        max_len = length_limit(src.size(1), s.max_len_a, s.max_len_b)
        args = (self.model, src, src_mask, self.bos_id, self.eos_id, max_len)
        if s.sample:
            samples = sample(*args, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                             n_samples=s.n_best, generator=generator)
            return [sorted(hyps, key=lambda h: -h.score) for hyps in samples]
        if s.beam_size == 1:
            return [[h] for h in greedy(*args)]
        n_best = s.beam_size if s.rerank != "none" else s.n_best  # reranking looks at the whole beam
        return beam_search(*args, beam_size=s.beam_size, alpha=s.length_penalty, n_best=n_best)


def _refuse_long(encoded: list[list[int]], limit: int) -> None:
    """Strict mode: raise for the first input that needs truncating (the source also holds EOS)."""
    for i, ids in enumerate(encoded):
        if len(ids) >= limit:
            raise InputTooLongError(i, len(ids), limit - 1)
