"""Our Transformer as a CTranslate2 model: the spec filled from our weights, and decoding ids through it.

    python -m nmt.ct2 models/export models/ct2        # then ctranslate2.Translator("models/ct2")

CTranslate2 (https://github.com/OpenNMT/CTranslate2) is a C++ inference engine that deployments
use for speed (int8 on CPUs among others). Its Python spec API describes a model layer by layer; the
converters it ships (fairseq, OpenNMT-py) fill that spec from their own checkpoints, and
:func:`transformer_spec` does the same from :class:`nmt.model.Transformer`. The mapping is exact,
layer for layer (the greedy outputs are token-identical; tests/test_ctranslate2.py):

- pre-LayerNorm blocks and a final LayerNorm on each side: ``pre_norm=True``, ``encoder/decoder.layer_norm``;
- ``nn.LayerNorm``'s epsilon (1e-5): config ``layer_norm_epsilon``, read off the model;
- exact (erf) GELU: ``Activation.GELU`` (``GELUTanh`` is the tanh approximation);
- ``embed(ids) * sqrt(d_model)``: ``scale_embeddings = True``;
- positions: ``position_encodings.encodings`` = our table, row p for position p, always given:
  CTranslate2's built-in sinusoidal table is OpenNMT-tf's (src/layers/common.cc), not ours: it
  counts positions from 1, spaces its frequencies as 10000^(j / (D/2 - 1)) and puts every sine
  before every cosine, where ours interleaves them (2i, 2i+1); learned positions give ``pos.weight``;
- one table for source, target and output: the same array as both embeddings and the
  ``projection`` (no bias);
- self-attention's fused q|k|v projection: ``self_attention.linear[0]`` (the same layout), then
  ``linear[1]``; cross-attention's q and fused k|v: ``attention.linear[0]``, ``[1]``, ``[2]``;
- softmax(q kᵀ / sqrt(head size)): CTranslate2's default scaling.

CTranslate2 reads tokens as strings: the vocabulary is each id written in decimal (``"0"`` ..
``"V-1"``), so token ids go in as ``str(id)`` and come back through ``int``. Our sources end in
EOS (``nmt.batching.source_ids``), which the caller passes; decoding starts from BOS and stops at EOS.
A model trained with ``tokenize.neighbour_code`` reads the description, EOS, then its nearest training
pair's code: the caller passes those joined ids, as ``Translator`` builds them (``_sources``).

What CTranslate2 cannot express, so :func:`check_convertible` refuses it (``UnsupportedModelError``):

- **copying** (``model.copy``, the pointer-generator): its output mixes a softmax over the
  vocabulary with attention over the source ids, a layer CTranslate2 has no spec for;
- **the placeholder restriction** (``tokenize.placeholder_tokens``: an output may hold only the
  placeholders of its own source): a per-source ban on output ids. ``translate_batch``'s
  ``suppress_sequences`` bans the same ids for a whole batch, not per source. ``unrestricted=True``
  converts such a model anyway, knowing its outputs may hold placeholders their source lacks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nmt.checkpoint import load_model
from nmt.errors import ModelFileError
from nmt.model import Transformer
from nmt.tokenizer import Tokenizer

if TYPE_CHECKING:
    import ctranslate2
    from ctranslate2.specs import TransformerSpec


class UnsupportedModelError(ValueError):
    """The model uses a feature CTranslate2 cannot express."""


def import_ctranslate2():
    """The ctranslate2 module, or ModuleNotFoundError saying how to install it (an optional dependency)."""
    try:
        import ctranslate2
    except ImportError as e:
        raise ModuleNotFoundError("CTranslate2 is not installed: `pip install ctranslate2` "
                                  "(or `make install`, which installs the dev extra)") from e
    return ctranslate2


def check_convertible(model: Transformer, placeholder_ids: Sequence[int] = (), unrestricted: bool = False) -> None:
    """Raise UnsupportedModelError naming the feature when the model has one CTranslate2 cannot express."""
    if model.pointer is not None:
        raise UnsupportedModelError(
            "the model copies source tokens (model.copy: true, the pointer-generator), which CTranslate2 cannot "
            "express: only a model trained with model.copy: false converts")
    if (placeholder_ids or bool(model.source_only.any())) and not unrestricted:
        raise UnsupportedModelError(
            "the model decodes with the placeholder restriction (tokenize.placeholder_tokens: an output holds only "
            "its own source's placeholders), which CTranslate2 cannot express per source: train with "
            "placeholder_tokens: false, or convert with unrestricted=True (--unrestricted) and accept outputs "
            "that may hold placeholders their source lacks")


def _array(t: torch.Tensor):
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def _linear(spec: Any, layer: nn.Linear) -> None:
    spec.weight, spec.bias = _array(layer.weight), _array(layer.bias)


def _layer_norm(spec: Any, layer: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(layer.weight), _array(layer.bias)


def _positions(model: Transformer):
    """The (max_len, D) table added at positions 0, 1, ...: ours, never CTranslate2's built-in one."""
    return _array(model.pos.weight if model.cfg.positions == "learned" else model.pos_table)


def _ffn(spec: Any, norm: nn.LayerNorm, ff: nn.Module) -> None:
    _layer_norm(spec.layer_norm, norm)
    _linear(spec.linear_0, ff.fc)
    _linear(spec.linear_1, ff.proj)


def _self_attention(spec: Any, norm: nn.LayerNorm, attn: nn.Module) -> None:
    _layer_norm(spec.layer_norm, norm)
    _linear(spec.linear[0], attn.qkv)  # q|k|v fused along the output, the layout CTranslate2 expects
    _linear(spec.linear[1], attn.proj)


def transformer_spec(model: Transformer, bos_id: int, eos_id: int) -> TransformerSpec:
    """The CTranslate2 ``TransformerSpec`` of ``model``, every weight set (call check_convertible first)."""
    ctranslate2 = import_ctranslate2()
    specs = ctranslate2.specs
    cfg = model.cfg
    spec = specs.TransformerSpec.from_config((cfg.enc_layers, cfg.dec_layers), cfg.n_heads, pre_norm=True,
                                             activation=specs.Activation.GELU)
    embed, positions = _array(model.embed.weight), _positions(model)
    enc, dec = spec.encoder, spec.decoder
    enc.embeddings[0].weight, dec.embeddings.weight, dec.projection.weight = embed, embed, embed  # one table
    for side in (enc, dec):
        side.scale_embeddings = True  # embed(ids) * sqrt(d_model)
        side.position_encodings.encodings = positions
    for layer_spec, layer in zip(enc.layer, model.encoder):
        _self_attention(layer_spec.self_attention, layer.ln_attn, layer.attn)
        _ffn(layer_spec.ffn, layer.ln_ff, layer.ff)
    _layer_norm(enc.layer_norm, model.ln_enc)
    for layer_spec, layer in zip(dec.layer, model.decoder):
        _self_attention(layer_spec.self_attention, layer.ln_self, layer.self_attn)
        _layer_norm(layer_spec.attention.layer_norm, layer.ln_cross)
        _linear(layer_spec.attention.linear[0], layer.cross_attn.q)
        _linear(layer_spec.attention.linear[1], layer.cross_attn.kv)  # k|v fused, CTranslate2's layout
        _linear(layer_spec.attention.linear[2], layer.cross_attn.proj)
        _ffn(layer_spec.ffn, layer.ln_ff, layer.ff)
    _layer_norm(dec.layer_norm, model.ln_dec)

    vocabulary = [str(i) for i in range(model.vocab_size)]
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    config = spec.config
    config.layer_norm_epsilon = model.ln_enc.eps  # CTranslate2's default differs from nn.LayerNorm's 1e-5
    # Our vocabulary has no unknown token: every id is a token. PAD stands in (CTranslate2 needs one
    # name), and is never fed: sources and prefixes are ids of the vocabulary.
    config.unk_token = str(model.pad_id)
    config.bos_token = config.decoder_start_token = str(bos_id)
    config.eos_token = str(eos_id)
    config.add_source_bos = config.add_source_eos = False  # the caller's ids already end in EOS
    return spec


def convert(model: Transformer, out_dir: Path, bos_id: int, eos_id: int, placeholder_ids: Sequence[int] = (),
            unrestricted: bool = False, quantization: str | None = None) -> Path:
    """Write ``model`` as a CTranslate2 model directory ``out_dir`` (model.bin, config.json, shared_vocabulary).

    Weights are stored in float32 unless ``quantization`` names one of CTranslate2's (int8, ...);
    a float32 model is also quantized when loaded (``ctranslate2.Translator(..., compute_type="int8")``).
    The directory appears whole or not at all.
    """
    check_convertible(model, placeholder_ids, unrestricted)
    spec = transformer_spec(model, bos_id, eos_id)
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        spec.save(str(tmp))
        if out_dir.exists():  # a former conversion: replaced whole, never mixed with this one's files
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def convert_dir(model_dir: Path, out_dir: Path, unrestricted: bool = False, quantization: str | None = None) -> Path:
    """Convert an exported model directory (model.safetensors, config.json, tokenizer.json)."""
    model_dir = Path(model_dir)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise ModelFileError(f"{model_dir / name}: missing; converting needs an exported model directory "
                                 "(model.safetensors, config.json, tokenizer.json: `dvc repro export`)")
    model, config = load_model(model_dir / "model.safetensors", model_dir / "config.json")
    placeholder_ids = Tokenizer.load(model_dir / "tokenizer.json").placeholder_ids
    return convert(model, out_dir, config["bos_id"], config["eos_id"], placeholder_ids, unrestricted, quantization)


def translate_ids(translator: ctranslate2.Translator, sources: Sequence[Sequence[int]], beam_size: int,
                  max_len: int, **options: Any) -> list[list[int]]:
    """Each source's best output ids through CTranslate2 (no BOS or EOS), as ours return them.

    ``sources`` are as our encoder sees them (ending in EOS); ``max_len`` is the most output tokens,
    EOS counted, as our decoders count it. ``options`` go to ``translate_batch`` (max_batch_size, ...).
    """
    results = translator.translate_batch([[str(i) for i in src] for src in sources], beam_size=beam_size,
                                         max_decoding_length=max_len, max_input_length=0, **options)
    return [[int(t) for t in r.hypotheses[0]] for r in results]


def score_ids(translator: ctranslate2.Translator, sources: Sequence[Sequence[int]],
              targets: Sequence[Sequence[int]]) -> list[list[float]]:
    """CTranslate2's log-probability of each token of each target (BOS not given, EOS scored last)."""
    results = translator.score_batch([[str(i) for i in s] for s in sources], [[str(i) for i in t] for t in targets],
                                     max_input_length=0)
    return [list(r.log_probs) for r in results]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="an exported model directory (models/export)")
    ap.add_argument("out_dir", type=Path, help="where the CTranslate2 model directory goes (replaced if it exists)")
    ap.add_argument("--quantization", default=None,
                    help="store the weights quantized (int8, int16, float16, ...); default float32, which "
                         "CTranslate2 can still quantize when it loads the model (compute_type)")
    ap.add_argument("--unrestricted", action="store_true",
                    help="convert a model with the placeholder restriction anyway (CTranslate2 decodes it without)")
    args = ap.parse_args(argv)
    try:
        out = convert_dir(args.model_dir, args.out_dir, args.unrestricted, args.quantization)
    except (UnsupportedModelError, ModelFileError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
