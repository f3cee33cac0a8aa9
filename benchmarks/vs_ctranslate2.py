"""Beam search, ours against CTranslate2 on the CPU (fp32 and int8), and whether their greedy outputs agree.

    .venv/bin/python -m benchmarks.vs_ctranslate2 [--quick]     (also part of `make bench`)

The model is the benchmarks' shape (benchmarks.train_step.SHAPE, vocabulary 5,000) with random
weights, copy off (CTranslate2 cannot express copying), converted by ``nmt.ct2``, so both engines
run the very same weights.

**Same work.** Beam 4 over the same 64 sources of 24 tokens, in one process, each run producing
exactly ``steps`` tokens per source: ours with an EOS id no argmax can return (as
benchmarks.decoding times it against HF BART), CTranslate2 with ``min_decoding_length =
max_decoding_length = steps`` (EOS forbidden before the last step; every output's length is checked).
Throughput is output tokens of the best hypotheses per second, 64 x ``steps`` on both sides, so the
ratio of tokens/s is the inverse ratio of seconds.

**CTranslate2 at its fastest.** ``inter_threads=1`` and ``intra_threads`` = the cores (torch's
thread count, and os.cpu_count() where that differs), one batch of all 64 sources or
``max_batch_size`` 16 / 32: every setting is timed (``ctranslate2_beam_s``,
``ctranslate2_int8_beam_s``) and each ratio is against the fastest. Ours runs under
``torch.inference_mode`` in fp32 and in int8 (``nmt.decoding.quantize``: torch's dynamic
quantization of the linear layers, ``beam_int8_speedup_vs_ctranslate2_int8``);
``compute_type="int8"`` is CTranslate2's int8 (weights int8, activations quantized on the fly).
The repeats of every side are timed in turns.

**Same outputs.** Greedy decoding (EOS allowed, padded batches) of 256 sources by ours and by
CTranslate2, on a small model trained for a few seconds to reverse its source (random weights with
tied embeddings repeat BOS whatever the source, which any two engines agree on):
``ctranslate2_same_output`` (fp32) and ``ctranslate2_int8_same_output`` are the shares of sources
whose outputs are identical token for token; ``ctranslate2_agreement_distinct_outputs`` and
``..._reversed`` show the outputs are varied and learned. ``ctranslate2_max_logprob_diff`` is the
largest difference between the two engines' log-probabilities of the same target tokens
(teacher-forced) on the benchmark-shaped model: the mapping is exact up to float rounding.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_medians
from benchmarks.decoding import BOS, NEVER, runnable
from benchmarks.train_step import SHAPE, VOCAB
from nmt.batching import collate, pad, source_ids
from nmt.config import ModelConfig
from nmt.ct2 import convert, import_ctranslate2, score_ids, translate_ids
from nmt.decoding.quantize import quantize
from nmt.decoding.search import beam_search, greedy
from nmt.device import torch_threads
from nmt.model import Transformer, target_nll

PAD, EOS = 0, 2
COMPUTE_TYPES = {"fp32": "float32", "int8": "int8"}
# `make bench`'s setting: beam 4 over 64 sources of 24 tokens, 32 output tokens each, every CTranslate2
# max_batch_size (0: all sources in one batch), 3 repeats; --quick: 8 tokens, one batch, one repeat.
SOURCES, SOURCE_LEN, BEAM, STEPS, BATCH_SIZES, REPEATS = 64, 24, 4, 32, (0, 16, 32), 3
QUICK_STEPS, QUICK_BATCH_SIZES = 8, (0,)


def thread_counts() -> list[int]:
    """The cores, as torch counts them (ours runs on these) and as the OS does, where they differ."""
    return sorted({torch.get_num_threads(), os.cpu_count() or 1})


def ct2_settings(model_dir: Path, sources: list[list[str]], beam: int, steps: int, compute_type: str,
                 batch_sizes: tuple[int, ...]) -> dict[str, Callable[[], None]]:
    """One CTranslate2 call per (threads, max_batch_size), each forced to ``steps`` tokens per source."""
    ctranslate2 = import_ctranslate2()
    calls = {}
    for threads in thread_counts():
        translator = ctranslate2.Translator(str(model_dir), device="cpu", compute_type=compute_type,
                                            inter_threads=1, intra_threads=threads)
        for max_batch in batch_sizes:
            def call(translator: ctranslate2.Translator = translator, max_batch: int = max_batch) -> None:
                results = translator.translate_batch(sources, beam_size=beam, max_batch_size=max_batch,
                                                     max_decoding_length=steps, min_decoding_length=steps,
                                                     max_input_length=0)
                lengths = {len(r.hypotheses[0]) for r in results}
                if lengths != {steps}:  # otherwise not the same work as ours
                    raise RuntimeError(f"CTranslate2 produced {sorted(lengths)} tokens, not {steps}")
            calls[f"{threads} threads, max_batch_size {max_batch or 'all'}"] = call
    return calls


# A small model trained to reverse its source: random weights with tied embeddings greedily repeat
# BOS whatever the source, so identical outputs would prove nothing; trained ones differ from source
# to source, in content and length, and end in EOS.
REVERSAL = ModelConfig(d_model=64, n_heads=4, enc_layers=2, dec_layers=2, d_ff=256, dropout=0.0, max_len=64,
                       copy=False)
REVERSAL_VOCAB = 3 + 32  # the specials, then 32 words


def reversal_sources(n: int, generator: torch.Generator) -> list[list[int]]:
    """``n`` sources of 3 to 10 words (ids 3 .. REVERSAL_VOCAB - 1), without their EOS."""
    lengths = torch.randint(3, 11, (n,), generator=generator).tolist()
    return [torch.randint(3, REVERSAL_VOCAB, (k,), generator=generator).tolist() for k in lengths]


def reversal_model(steps: int, seed: int = 0) -> Transformer:
    """REVERSAL trained ``steps`` AdamW steps of 32 pairs (source, source reversed); 150 give varied outputs."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Transformer(REVERSAL, REVERSAL_VOCAB, PAD).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch_threads(1):  # 2 threads were 5x slower on a busy 2-core CPU
        for _ in range(steps):
            srcs = reversal_sources(32, generator)
            b = collate(srcs, [s[::-1] for s in srcs], PAD, BOS, EOS, REVERSAL.max_len)
            loss = target_nll(model, PAD, b.src, b.src_mask, b.tgt_in, b.tgt_out) / (b.tgt_out != PAD).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def greedy_outputs(model: Transformer, sources: list[list[int]], max_len: int,
                   compute_type: str = "float32") -> tuple[list[list[int]], list[list[int]]]:
    """Greedy outputs (EOS allowed, at most ``max_len`` tokens) of ours and of CTranslate2 for ``sources``
    (without EOS: both are given them as our encoder sees them)."""
    ctranslate2 = import_ctranslate2()
    encoded = [source_ids(s, EOS, model.cfg.max_len) for s in sources]
    src = pad(encoded, PAD)
    ours = [h.tokens for h in greedy(model, src, src != PAD, BOS, EOS, max_len)]
    with tempfile.TemporaryDirectory() as tmp:
        translator = ctranslate2.Translator(str(convert(model, Path(tmp) / "ct2", BOS, EOS)), device="cpu",
                                            compute_type=compute_type)
        theirs = translate_ids(translator, encoded, beam_size=1, max_len=max_len)
    return ours, theirs


def agreement(train_steps: int, n_sources: int = 256, max_len: int = 32) -> dict:
    """How often CTranslate2's greedy output is ours, token for token, on the trained reversal model."""
    model = reversal_model(train_steps)
    sources = reversal_sources(n_sources, torch.Generator().manual_seed(1))
    out: dict = {}
    for kind, compute_type in COMPUTE_TYPES.items():
        ours, theirs = greedy_outputs(model, sources, max_len, compute_type)
        key = "ctranslate2_same_output" if kind == "fp32" else f"ctranslate2_{kind}_same_output"
        out[key] = round(sum(a == b for a, b in zip(ours, theirs)) / len(ours), 4)
    return out | {"ctranslate2_agreement_sources": n_sources,
                  "ctranslate2_agreement_distinct_outputs": len({tuple(o) for o in ours}),
                  "ctranslate2_agreement_reversed": round(sum(o == s[::-1] for o, s in zip(ours, sources))
                                                          / n_sources, 4)}


@torch.inference_mode()
def max_logprob_diff(model: Transformer, model_dir: Path, src: torch.Tensor, tgt: torch.Tensor) -> float:
    """Largest |ours - CTranslate2's| log-probability of the tokens of ``tgt`` then EOS, teacher-forced."""
    ctranslate2 = import_ctranslate2()
    translator = ctranslate2.Translator(str(model_dir), device="cpu")
    B = tgt.size(0)
    tgt_in = torch.cat([torch.full((B, 1), BOS), tgt], dim=1)  # (B, T+1)
    tgt_out = torch.cat([tgt, torch.full((B, 1), EOS)], dim=1)  # (B, T+1)
    ours = F.log_softmax(model(src, torch.ones_like(src, dtype=torch.bool), tgt_in).float(), dim=-1)
    ours = ours.gather(2, tgt_out[:, :, None]).squeeze(2)  # (B, T+1)
    theirs = torch.tensor(score_ids(translator, src.tolist(), tgt.tolist()))  # (B, T+1)
    return float((ours - theirs).abs().max())


def benchmark_model(batch: int = SOURCES, cfg: ModelConfig = SHAPE, vocab: int = VOCAB
                    ) -> tuple[Transformer, torch.Tensor, torch.Tensor]:
    """The random-weight model both engines run (copy off: SHAPE's model.copy is False) and its
    ``batch`` sources of SOURCE_LEN tokens with their mask."""
    torch.manual_seed(0)
    model = Transformer(cfg, vocab).eval()
    src = torch.randint(3, vocab, (batch, SOURCE_LEN))
    return model, src, torch.ones_like(src, dtype=torch.bool)


def our_beam_searches(model: Transformer, src: torch.Tensor, mask: torch.Tensor, steps: int,
                      beam: int) -> dict[str, Callable[[], None]]:
    """Our beam search forced to ``steps`` tokens, in fp32 and with nmt's int8 (nmt.decoding.quantize),
    keyed by COMPUTE_TYPES' names."""
    model_int8 = quantize(copy.deepcopy(model), "int8")

    def search(m: Transformer) -> Callable[[], None]:
        @torch.inference_mode()
        def call() -> None:
            beam_search(m, src, mask, BOS, NEVER, steps, beam_size=beam)
        return call

    return {"fp32": search(model), "int8": search(model_int8)}


def beam_vs_ctranslate2(repeats: int, steps: int, batch: int = SOURCES, beam: int = BEAM,
                        batch_sizes: tuple[int, ...] = BATCH_SIZES) -> dict:
    """Ours against CTranslate2's fastest setting, fp32 and int8, and their log-probabilities. CPU only."""
    model, src, mask = benchmark_model(batch)
    sources = [[str(i) for i in row] for row in src.tolist()]
    searches = our_beam_searches(model, src, mask, steps, beam)
    ours, ours_int8 = searches["fp32"], searches["int8"]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = convert(model, Path(tmp) / "ct2", BOS, EOS)
        settings = {kind: ct2_settings(model_dir, sources, beam, steps, compute_type, batch_sizes)
                    for kind, compute_type in COMPUTE_TYPES.items()}
        ran = {kind: runnable(calls) for kind, calls in settings.items()}  # each warmed up once, or its error
        ours(), ours_int8()  # warm-up, as each CTranslate2 setting just had
        timed = {f"{kind}: {name}": fn for kind, (calls, _) in ran.items() for name, fn in calls.items()}
        seconds = interleaved_medians({"ours": ours, "ours int8": ours_int8, **timed}, repeats)
        scored = min(16, batch)  # teacher-forced rows: a random target per source
        logprob_diff = max_logprob_diff(model, model_dir, src[:scored], torch.randint(3, VOCAB, (scored, steps)))
    tokens = batch * steps
    ours_s, ours_int8_s = seconds.pop("ours"), seconds.pop("ours int8")
    out: dict = {"ours_beam_tok_s": round(tokens / ours_s), "ours_int8_beam_tok_s": round(tokens / ours_int8_s)}
    for kind, (calls, failed) in ran.items():
        prefix = "ctranslate2" if kind == "fp32" else f"ctranslate2_{kind}"
        theirs = {name: seconds[f"{kind}: {name}"] for name in calls}
        fastest = min(theirs, key=theirs.__getitem__)
        out |= {f"{prefix}_beam_s": {name: round(theirs[name], 4) if name in theirs else failed[name]
                                     for name in settings[kind]},
                f"{prefix}_fastest_setting": fastest,
                f"{prefix}_beam_tok_s": round(tokens / theirs[fastest]),
                f"beam_speedup_vs_{prefix}": round(theirs[fastest] / ours_s, 2)}
    int8_fastest = seconds[f"int8: {out['ctranslate2_int8_fastest_setting']}"]
    return out | {
        "beam_int8_speedup_vs_ctranslate2_int8": round(int8_fastest / ours_int8_s, 2),
        "ctranslate2_max_logprob_diff": float(f"{logprob_diff:.3g}"),
        "ctranslate2_beam_output_tokens": steps,
        "ctranslate2_threads": thread_counts(),
    }


def measure(quick: bool) -> dict:
    """`make bench`'s figures (32 tokens, 3 repeats, every batch setting; agreement after 300 training
    steps), or a --quick smoke run's."""
    if quick:
        return (beam_vs_ctranslate2(repeats=1, steps=QUICK_STEPS, batch_sizes=QUICK_BATCH_SIZES)
                | agreement(train_steps=100, n_sources=64))
    return beam_vs_ctranslate2(repeats=REPEATS, steps=STEPS) | agreement(train_steps=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, tokens and settings: a smoke run")
    print(json.dumps(measure(ap.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
