"""How to decode, in one type: :class:`DecodeSettings`.

Every way of asking for a translation builds one, once, and hands it whole to
:meth:`nmt.decoding.translator.Translator.translate`:

- the evaluate stage, from params.yaml's evaluate section (:meth:`DecodeSettings.from_config`);
- an exported model directory, from config.json's ``"decoding"`` (the model's defaults, written by
  the export stage from the same section);
- ``nmt generate`` / ``nmt evaluate`` and a request to the served model, from the options they
  were given over the model's defaults (:meth:`DecodeSettings.with_options`).

The fields, their defaults (plain greedy search, no reranking: what a model directory without
recorded defaults decodes with) and their checks live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields
from typing import Any

from nmt.config import DECODING_KEYS, RERANK_CHOICES, RERANK_WEIGHTS, EvaluateConfig
from nmt.decoding.rerank import LexicalWeights
from nmt.decoding.search import check_sampling


@dataclass(frozen=True)
class DecodeSettings:
    """How :meth:`~nmt.decoding.translator.Translator.translate` decodes; :meth:`check` names the first bad option."""

    beam_size: int = 1  # 1: greedy search
    n_best: int = 1  # hypotheses returned (<= beam_size), or samples drawn
    max_len_a: float = 0.0  # longest output: floor(max_len_a * source tokens) + max_len_b
    max_len_b: int = 200
    length_penalty: float = 0.6  # GNMT alpha of beam search
    sample: bool = False  # draw n_best samples instead of searching
    temperature: float = 1.0
    top_k: int = 0  # 0: every token
    top_p: float = 1.0  # nucleus mass
    rerank: str = "none"  # none | syntax | lexical (nmt.decoding.rerank)
    rerank_missing: float = 0.0
    rerank_unexplained: float = 0.0
    rerank_repeated: float = 0.0
    rerank_reconstruction: float = 0.0  # weight of the reverse model's log P(description | hypothesis)
    literal_prefixes: bool = False  # r / b on a literal the description calls a raw / bytes string
    grammar: bool = False  # beam search keeps only hypotheses that can still parse (nmt.decoding.grammar)

    @classmethod
    def from_config(cls, cfg: EvaluateConfig) -> DecodeSettings:
        """The evaluate section's search (params.yaml): what the pipeline decodes the test split with."""
        return cls(**{key: getattr(cfg, key) for key in DECODING_KEYS})

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> DecodeSettings:
        """Settings from a mapping of field names (config.json's ``"decoding"``, validated when the
        model directory is read): unknown names are refused, the rest default as the class does."""
        unknown = set(recorded) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown decoding option(s): {', '.join(sorted(unknown))}")
        return cls(**recorded)

    def recorded(self) -> dict[str, Any]:
        """The search a model directory records as its defaults (config.json ``"decoding"``)."""
        return {key: getattr(self, key) for key in DECODING_KEYS}

    def with_options(self, sample: bool = False, **given: Any) -> DecodeSettings:
        """These settings as defaults, overridden by every ``given`` option that is not None.

        When sampling, beam_size and rerank default to 1 and none: the defaults describe a search.
        Values are converted to the field's type (a served request's JSON numbers), so that
        :meth:`check` compares like with like; one that does not convert raises ValueError naming it.
        """
        base = dataclasses.replace(self, beam_size=1, rerank="none") if sample else self
        chosen = {key: _convert(key, value) for key, value in given.items() if value is not None}
        unknown = set(chosen) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown decoding option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(base, sample=sample, **chosen)

    def check(self) -> None:
        """Raise ValueError naming the first option out of range or at odds with another."""
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
        if not (math.isfinite(self.length_penalty) and self.length_penalty >= 0):
            raise ValueError(f"length_penalty must be a finite number >= 0, got {self.length_penalty}")
        if self.max_len_b < 1:
            raise ValueError(f"max_len_b must be >= 1, got {self.max_len_b}")
        if self.rerank not in RERANK_CHOICES:
            raise ValueError(f"rerank must be one of {', '.join(RERANK_CHOICES)}, got {self.rerank!r}")
        for name in RERANK_WEIGHTS:
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

    @property
    def decodes_n_best(self) -> int:
        """Hypotheses the search returns: the whole beam when reranking picks among them."""
        return self.beam_size if self.rerank != "none" and not self.sample else self.n_best


_TYPES = typing.get_type_hints(DecodeSettings)


def _convert(key: str, value: Any) -> Any:
    """``value`` as field ``key``'s type: 4.0 -> 4 for an int field, 4 -> 4.0 for a float one."""
    kind = _TYPES.get(key)
    if kind is None or isinstance(value, bool) or kind is bool or kind is str:
        return value
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if kind is int and converted != value:
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    return converted
