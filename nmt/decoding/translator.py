"""`Translator`: a trained model, its tokenizer and the decoders, behind one call.

    from nmt import Translator
    t = Translator.from_pretrained("models/export")
    t.translate(["return the absolute value of x"], beam_size=4, n_best=2)
    t.translate(["return the absolute value of x"], sample=True, top_p=0.9, n_best=5, seed=0)

It is what `nmt generate`, `nmt evaluate` and the evaluate stage use. On its own it

- masks the inputs and restores the outputs when the model was trained with string placeholders
  (the tokenizer file says so; :mod:`nmt.placeholders`);
- completes each input with its nearest training pair's code when the model was trained so
  (``tokenize.neighbour_code``, :mod:`nmt.neighbours`), from the training pairs the export carries;
- decodes with the model directory's decoding defaults (config.json ``"decoding"``, written by the
  export stage from the evaluate stage's settings) for every option the caller leaves out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nmt.batching import pad, source_ids
from nmt.checkpoint import load_model
from nmt.config import EvaluateConfig
from nmt.data.pairs import read_pair_file
from nmt.decoding.grammar import PythonLineConstraint, significant_tokens
from nmt.decoding.quantize import check_quantize
from nmt.decoding.quantize import quantize as quantize_model
from nmt.decoding.reconstruction import reconstruction_scores
from nmt.decoding.rerank import LEXICON_FILE, Lexicon, rerank_order
from nmt.decoding.search import Hypothesis, decode
from nmt.decoding.settings import DecodeSettings
from nmt.device import resolve_device
from nmt.errors import InputTooLongError, ModelFileError
from nmt.model import Transformer
from nmt.neighbours import joined, neighbour_codes, neighbour_index
from nmt.placeholders import Masked, add_described_prefixes, mask_description, restore
from nmt.retrieval import PAIRS_FILE, RetrievalBaseline
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


# What the options a caller leaves out default to, unless the model directory records its own: plain
# greedy search without reranking (which needs an export's lexicon), with the rerank weights the
# evaluate section of params.yaml defaults to, so exports without decoding defaults decode as they did.
BUILTIN_SETTINGS = DecodeSettings.from_config(replace(
    EvaluateConfig(), beam_size=1, rerank="none", literal_prefixes=False, rerank_reconstruction=0.0,
    max_len_a=0.0, max_len_b=200))


class Translator:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, bos_id: int, eos_id: int,
                 decoding: dict[str, Any] | None = None, lexicon: Lexicon | None = None,
                 reverse: Transformer | None = None, quantize: str = "none",
                 neighbours: RetrievalBaseline | None = None):
        """``quantize="int8"``: int8 linear layers in the model and the reverse model, CPU only
        (:mod:`nmt.decoding.quantize`); a bad value raises ValueError naming the choices.
        ``neighbours``: the training pairs' index (:func:`nmt.neighbours.neighbour_index`), which a
        tokenizer with ``neighbour_code`` needs."""
        if tokenizer.neighbour_code and neighbours is None:
            raise ModelFileError("this model reads each description with its nearest training pair's code "
                                 "(tokenize.neighbour_code): give the training pairs (the export's "
                                 f"{PAIRS_FILE}, or pairs= for Translator.from_files)")
        for name, m in (("model", model), ("reverse model", reverse)):
            if m is not None and m.vocab_size != tokenizer.vocab_size:
                raise ModelFileError(
                    f"{name} vocabulary ({m.vocab_size}) does not match the tokenizer's ({tokenizer.vocab_size})"
                )
        self.model, self.tokenizer = quantize_model(model.eval(), quantize), tokenizer
        self.quantize = quantize
        if tokenizer.placeholder_ids:  # an output uses only the placeholders of its own description
            self.model.restrict_to_source(tokenizer.placeholder_ids)
        self.bos_id, self.eos_id = bos_id, eos_id
        # What translate() decodes with for every option a call leaves out: the model directory's
        # recorded search (config.json "decoding"), else the built-in one.
        self.defaults = replace(BUILTIN_SETTINGS, **(decoding or {}))
        self.lexicon = lexicon  # the training pairs' word counts, for rerank="lexical"
        # code -> description, for rerank_reconstruction
        self.reverse = None if reverse is None else quantize_model(reverse.eval(), quantize)
        self._significant: list[bool] | None = None  # grammar search's per-token table (nmt.decoding.grammar)
        self.neighbours = neighbours if tokenizer.neighbour_code else None

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @classmethod
    def from_files(cls, weights: Path, config: Path, tokenizer: Path, device: str = "auto",
                   lexicon: Path | None = None, reverse: tuple[Path, Path] | None = None,
                   quantize: str = "none", pairs: Path | None = None) -> Translator:
        """``reverse``: the reverse model's (weights, config) files; ``quantize``: none or int8;
        ``pairs``: the training pairs (JSON lines, gzipped or not), read when the tokenizer has
        ``neighbour_code``."""
        model, cfg = load_model(Path(weights), Path(config), resolve_device(device))
        reverse_model = None if reverse is None else load_model(*map(Path, reverse), resolve_device(device))[0]
        tok = Tokenizer.load(Path(tokenizer))
        index = neighbour_index(read_pair_file(Path(pairs))) if tok.neighbour_code and pairs is not None else None
        return cls(model, tok, cfg["bos_id"], cfg["eos_id"], cfg.get("decoding"),
                   None if lexicon is None else Lexicon.load(lexicon), reverse_model, quantize, index)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "auto", quantize: str = "none") -> Translator:
        """Load an exported model directory (model.safetensors, config.json, tokenizer.json, and
        lexicon.json and reverse.safetensors + reverse.json where the export stage wrote them);
        ``quantize="int8"`` decodes with int8 linear layers (CPU only, :mod:`nmt.decoding.quantize`)."""
        d = Path(model_dir)
        check_quantize(quantize)  # before the weights are read: a typo fails at once
        if quantize != "none" and device == "auto":
            device = "cpu"  # int8 kernels exist on the CPU only; "auto" picks where the model can run
        if not d.is_dir():
            raise ModelFileError(f"{d}: model directory not found (run `dvc repro` to create models/export)")
        for name in EXPORT_FILES:
            if not (d / name).is_file():
                raise ModelFileError(f"{d / name}: missing; a model directory needs {', '.join(EXPORT_FILES)}")
        lexicon = d / LEXICON_FILE
        reverse = tuple(d / name for name in REVERSE_FILES)
        if any(p.is_file() for p in reverse) and not all(p.is_file() for p in reverse):
            raise ModelFileError(f"{d}: the reverse model needs both {' and '.join(REVERSE_FILES)}; re-export the model")
        pairs = d / PAIRS_FILE
        return cls.from_files(d / "model.safetensors", d / "config.json", d / "tokenizer.json", device,
                              lexicon if lexicon.is_file() else None, reverse if reverse[0].is_file() else None,
                              quantize, pairs if pairs.is_file() else None)

    def settings(self, sample: bool = False, **options: Any) -> DecodeSettings:
        """The model's defaults with ``options`` that are not None set (:meth:`DecodeSettings.with_options`)."""
        return self.defaults.with_options(sample, **options)

    def translate(self, texts: list[str], settings: DecodeSettings | None = None, *, batch_size: int = 64,
                  seed: int | None = None, strict: bool = False, on_batch: Callable[[int], None] | None = None,
                  **options: Any) -> list[Translation]:
        """Translate each text as ``settings`` say: greedy (``beam_size == 1``), batched beam search, or sampling.

        ``settings`` left out: the model directory's decoding defaults (:attr:`defaults`), with any
        :class:`~nmt.decoding.settings.DecodeSettings` field given as a keyword option set on top
        (``t.translate(texts, beam_size=4, n_best=2)``; ``sample=True`` makes beam_size and rerank
        default to 1 and none).

        Texts are sorted by length into batches of ``batch_size``. A batch's outputs are at most
        ``floor(max_len_a * S) + max_len_b`` tokens, S the length of its longest source (EOS
        included), capped by the model's ``max_len``. Sampling draws ``n_best`` samples per text
        (:func:`nmt.decoding.search.sample`), best score first; ``seed`` makes the draws repeatable
        for the same texts, batch size and device. Otherwise ``n_best <= beam_size`` hypotheses
        come back. ``rerank="syntax"`` decodes the whole n-best and puts the hypotheses that are
        valid Python first; ``rerank="lexical"`` also weighs each against its description's words
        (:attr:`lexicon`) and, with a ``rerank_reconstruction`` weight, asks the reverse model
        (:attr:`reverse`) how well it gives its description back (:mod:`nmt.decoding.rerank`).
        ``literal_prefixes`` puts the ``r`` / ``b`` of a literal the description calls a raw / bytes
        string on the output's copy of it.

        A text longer than the model's source limit is cut to fit and flagged ``truncated``; with
        ``strict=True`` it raises :class:`~nmt.errors.InputTooLongError` (a ValueError) naming its
        index instead. Bad options raise ValueError naming the option. ``on_batch`` is called with
        the number of texts of each batch once it is decoded (a progress bar's hook).
        """
        if settings is None:
            settings = self.settings(**options)
        elif options:
            settings = settings.with_options(options.pop("sample", settings.sample), **options)
        self._check(settings, batch_size)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        masked, encoded, sources = self._sources(texts, strict)
        order = sorted(range(len(texts)), key=lambda i: len(sources[i]))  # similar lengths share a batch
        results: list[Translation | None] = [None] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            src = pad([sources[i] for i in chunk], self.model.pad_id).to(self.device)
            found = self._decode(src, settings, generator, [masked[i] for i in chunk])
            rec = self._reconstruction(found, [encoded[i] for i in chunk]) if settings.reconstructs else None
            for k, (i, hyps) in enumerate(zip(chunk, found)):
                results[i] = self._finish(texts[i], masked[i], hyps, None if rec is None else rec[k],
                                          len(encoded[i]) >= self.model.cfg.max_len, settings)
            if on_batch is not None:
                on_batch(len(chunk))
        return results  # type: ignore[return-value]

    def _check(self, settings: DecodeSettings, batch_size: int) -> None:
        """Refuse settings out of range, or asking for what this model directory lacks."""
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

    def _sources(self, texts: list[str], strict: bool) -> tuple[list[Masked | None], list[list[int]], list[list[int]]]:
        """Each text masked (placeholders), encoded, and as the encoder sees it (with its
        neighbour's code where the model reads one, cut to fit, EOS)."""
        limit = self.model.cfg.max_len
        masked = [mask_description(t, self.tokenizer.name_placeholders, self.tokenizer.common_words)
                  if self.tokenizer.string_placeholders else None for t in texts]
        encoded = self.tokenizer.encode_batch([t if m is None else m.text for t, m in zip(texts, masked)])
        if strict:
            _refuse_long(encoded, limit)
        full = encoded
        if self.neighbours is not None:
            codes = self.tokenizer.encode_batch(neighbour_codes(self.neighbours, texts, masked))
            full = [joined(ids, code, self.eos_id) for ids, code in zip(encoded, codes)]
        return masked, encoded, [source_ids(ids, self.eos_id, limit) for ids in full]

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

    def _decode(self, src: torch.Tensor, s: DecodeSettings, generator: torch.Generator | None,
                masked: list[Masked | None]) -> list[list[Hypothesis]]:
        constraint = None
        if s.grammar and s.beam_size > 1 and not s.sample:  # the literals of each source, to parse its lines
            if self._significant is None:  # built once per translator, not per batch
                self._significant = significant_tokens(self.tokenizer)
            constraint = PythonLineConstraint(self.tokenizer, [[] if m is None else m.literals for m in masked],
                                              self._significant)
        return decode(self.model, src, src != self.model.pad_id, self.bos_id, self.eos_id, s, generator, constraint)


def _refuse_long(encoded: list[list[int]], limit: int) -> None:
    """Strict mode: raise for the first input that needs truncating (the source also holds EOS)."""
    for i, ids in enumerate(encoded):
        if len(ids) >= limit:
            raise InputTooLongError(i, len(ids), limit - 1)
