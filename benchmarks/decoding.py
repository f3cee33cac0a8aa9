"""Decoding: KV-cached vs uncached greedy; our batched beam search vs Hugging Face BART's.

Random weights; EOS is an id no decoder emits (ours) or is forbidden until the last step (BART,
``min_new_tokens = max_new_tokens``), so every decoder runs exactly the same number of steps.

BART is built at our benchmark shape (d_model 256, 3+3 layers, 4 heads, feed-forward 1024,
vocabulary 5,000, GELU, no dropout at inference): the same FLOPs per token up to BART's extra
layer norm on the embeddings, so the ratio measures the decoders, not the models.

HF ``generate`` is timed under every setting a user would reach for to make it fast while doing
the same work (same beams, same number of output tokens): ``torch.no_grad``,
``torch.inference_mode``, a static KV cache (auto-compiled by transformers on a GPU), eager
attention instead of SDPA. A setting this transformers or device cannot run is recorded with its
error, not timed. The FASTEST is the baseline; ours runs under inference mode (its best), and the
two sides' repeats are timed in turns, so a drift during the run hits both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import torch

from benchmarks.common import autocast, interleaved_medians, median_seconds
from benchmarks.train_step import SHAPE, VOCAB
from nmt.decoding.search import beam_search, greedy
from nmt.model import Transformer

if TYPE_CHECKING:
    from transformers import BartForConditionalGeneration

NEVER = -1  # an EOS id no argmax can return: every sequence runs to max_len
BOS = 1


@torch.no_grad()
def uncached_greedy(model: Transformer, src: torch.Tensor, src_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The textbook way: re-run the decoder over the whole prefix at every step."""
    memory = model.encode(src, src_mask)
    ys = torch.full((src.size(0), 1), BOS, dtype=torch.long, device=src.device)
    for _ in range(steps):
        nxt = model.decode(ys, memory, src_mask, src)[:, -1].argmax(-1)  # (B,)
        ys = torch.cat([ys, nxt[:, None]], dim=1)  # (B, t+1)
    return ys[:, 1:]


def kv_cache(device: torch.device, repeats: int, steps: int) -> dict:
    """Greedy over 16 sources of 24 tokens, ``steps`` output tokens, with and without the cache."""
    torch.manual_seed(0)
    model = Transformer(SHAPE, VOCAB).to(device).eval()
    src = torch.randint(3, VOCAB, (16, 24), device=device)
    mask = torch.ones_like(src, dtype=torch.bool)
    with autocast(device):
        cached = median_seconds(lambda: greedy(model, src, mask, BOS, NEVER, steps), repeats, device)
        uncached = median_seconds(lambda: uncached_greedy(model, src, mask, steps), repeats, device)
        same = [h.tokens for h in greedy(model, src, mask, BOS, NEVER, steps)] == \
            uncached_greedy(model, src, mask, steps).tolist()
    return {"greedy_cached_s": round(cached, 4), "greedy_uncached_s": round(uncached, 4),
            "kv_cache_speedup": round(uncached / cached, 2), "cached_equals_uncached": same,
            "greedy_output_tokens": steps}


def bart(device: torch.device, attn_implementation: str | None = None) -> BartForConditionalGeneration:
    """BART at our shape, seeded: the same weights whatever the attention implementation."""
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=VOCAB, d_model=SHAPE.d_model, encoder_layers=SHAPE.enc_layers, decoder_layers=SHAPE.dec_layers,
        encoder_attention_heads=SHAPE.n_heads, decoder_attention_heads=SHAPE.n_heads,
        encoder_ffn_dim=SHAPE.d_ff, decoder_ffn_dim=SHAPE.d_ff, activation_function="gelu",
        max_position_embeddings=SHAPE.max_len, pad_token_id=0, bos_token_id=BOS, eos_token_id=2,
        decoder_start_token_id=BOS, forced_bos_token_id=None, forced_eos_token_id=None,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config).to(device).eval()
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model


def hf_settings(device: torch.device, src: torch.Tensor, mask: torch.Tensor, beam: int,
                steps: int) -> dict[str, Callable[[], None]]:
    """HF generate under each setting a user would try for speed, all forced to the same work."""
    hf, hf_eager = bart(device), bart(device, "eager")

    def generate(model: BartForConditionalGeneration, context: Callable[[], AbstractContextManager],
                 **options: object) -> Callable[[], None]:
        def call() -> None:
            with context():
                out = model.generate(input_ids=src, attention_mask=mask.long(), num_beams=beam, do_sample=False,
                                     max_new_tokens=steps, min_new_tokens=steps, early_stopping=False,
                                     length_penalty=0.6, **options)
            if out.size(1) != steps + 1:  # decoder start + steps tokens: otherwise not the same work as ours
                raise RuntimeError(f"generated {out.size(1) - 1} tokens, not {steps}")
        return call

    return {
        "no_grad": generate(hf, torch.no_grad),
        "inference_mode": generate(hf, torch.inference_mode),
        "inference_mode + static cache": generate(hf, torch.inference_mode, cache_implementation="static"),
        "inference_mode + eager attention": generate(hf_eager, torch.inference_mode),
    }


def runnable(settings: dict[str, Callable[[], None]]) -> tuple[dict[str, Callable[[], None]], dict[str, str]]:
    """Each setting run once (its warm-up; a static cache compiles here on a GPU): those that ran,
    and why each other one did not."""
    ran, failed = {}, {}
    for name, fn in settings.items():
        try:
            fn()
            ran[name] = fn
        except Exception as e:  # noqa: BLE001 - any error means "this setting does not work here": record it
            failed[name] = f"not run: {type(e).__name__}: {e}"[:300]
    if not ran:
        raise RuntimeError(f"no HF generate setting ran: {failed}")
    return ran, failed


def beam_vs_hf(device: torch.device, repeats: int, steps: int, batch: int = 64, beam: int = 4) -> dict:
    """Beam 4 over 64 sources of 24 tokens, ``steps`` output tokens each, in one batch on both sides,
    against HF's fastest setting; plus ours one source at a time (what batching buys)."""
    torch.manual_seed(0)
    model = Transformer(SHAPE, VOCAB).to(device).eval()
    src = torch.randint(3, VOCAB, (batch, 24), device=device)
    mask = torch.ones_like(src, dtype=torch.bool)

    @torch.inference_mode()
    def ours() -> None:
        beam_search(model, src, mask, BOS, NEVER, steps, beam_size=beam)

    @torch.inference_mode()
    def one_at_a_time() -> None:
        for i in range(batch):
            beam_search(model, src[i : i + 1], mask[i : i + 1], BOS, NEVER, steps, beam_size=beam)

    with autocast(device):
        settings = hf_settings(device, src, mask, beam, steps)
        hf, failed = runnable(settings)
        ours()  # warm-up, as each HF setting just had
        seconds = interleaved_medians({"ours": ours, **hf}, repeats, device)
        single_s = median_seconds(one_at_a_time, max(1, repeats // 2), device)
    ours_s = seconds.pop("ours")
    fastest = min(seconds, key=seconds.__getitem__)
    return {"beam_s": round(ours_s, 4),
            "hf_generate_s": {name: round(seconds[name], 4) if name in seconds else failed[name]
                              for name in settings},
            "hf_fastest_setting": fastest, "hf_bart_beam_s": round(seconds[fastest], 4),
            "beam_speedup_vs_hf": round(seconds[fastest] / ours_s, 2), "beam_one_at_a_time_s": round(single_s, 4),
            "beam_batching_speedup": round(single_s / ours_s, 2), "beam_output_tokens": steps}
