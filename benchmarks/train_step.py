"""Training step: ours vs ``torch.nn.Transformer`` of identical dimensions, MFU, memory, data wait.

Both models: d_model 256, 3+3 pre-LN layers, feed-forward 1024, 4 heads, GELU, dropout 0.1,
vocabulary 5,000, the embedding tied to the output layer, sinusoidal positions, label-smoothed
cross-entropy, the same fused AdamW, batch 64 with source = target length (24, then 128). A step
is forward + backward + optimizer update; tokens/s counts target tokens (what the train stage's
``tok_s`` counts).

    python -m benchmarks.train_step --length 24          # one shape, printed as JSON
    python -m benchmarks.train_step --length 128 --compile   # both models through torch.compile

``--compile`` times the same two steps with each model through ``torch.compile`` (inductor, this
fixed shape: no recompiling), the fusion of the elementwise operators that an eager step runs one
kernel at a time: the MFU a user who compiles gets, beside the eager one.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.common import autocast, interleaved_medians, peak_rss_mb, synchronize
from nmt.batching import Batch
from nmt.config import ModelConfig, TrainConfig
from nmt.data.tokenized import TokenizedSplit
from nmt.flops import train_step_flops
from nmt.model import Transformer, sinusoidal_table
from nmt.tokenizer import Tokenizer
from nmt.training.step import make_optimizer, optimizer_step

VOCAB, BATCH = 5000, 64
LENGTHS = (24, 128)  # source = target length of each timed shape; MFU's target is set on the last
SHAPE = ModelConfig(d_model=256, n_heads=4, enc_layers=3, dec_layers=3, d_ff=1024, dropout=0.1, max_len=512,
                    copy=False)  # the plain Transformer nn.Transformer is compared with
TRAIN = TrainConfig(lr=1e-4, warmup_steps=0, label_smoothing=0.1, clip_norm=1.0)
PAD = 0


class TorchTransformer(nn.Module):
    """``nn.Transformer`` dressed as our model: same embedding, positions, tying and loss."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.d_model = cfg.d_model
        self.embed = nn.Embedding(vocab_size, cfg.d_model, padding_idx=PAD)
        self.register_buffer("pos_table", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.core = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.enc_layers, cfg.dec_layers, cfg.d_ff, cfg.dropout,
                                   activation="gelu", batch_first=True, norm_first=True)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embed(ids) * math.sqrt(self.d_model) + self.pos_table[: ids.size(1)])

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        T = tgt_in.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=tgt_in.device)  # (T, T)
        h = self.core(self.embed_tokens(src), self.embed_tokens(tgt_in), tgt_mask=causal, tgt_is_causal=True)
        return F.linear(h, self.embed.weight)  # (B, T, V)


def torch_step(model: TorchTransformer, batch: Batch, optimizer: torch.optim.Optimizer) -> None:
    """The same step as nmt.training.step.optimizer_step: summed smoothed loss / tokens, clip, AdamW."""
    logits = model(batch.src, batch.tgt_in)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.tgt_out.reshape(-1), ignore_index=PAD,
                           label_smoothing=TRAIN.label_smoothing, reduction="sum")
    (loss / batch.n_tokens).backward()
    loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN.clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def random_batch(length: int, device: torch.device, seed: int = 0, batch: int = BATCH, vocab: int = VOCAB) -> Batch:
    """``batch`` full-length pairs (no padding: both models see the same dense work)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (batch, length), generator=g)
    tgt = torch.randint(3, vocab, (batch, length + 1), generator=g)
    pairs = Batch(src, torch.ones_like(src, dtype=torch.bool), tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous(),
                  batch * length)
    return pairs.to(device)


def ours(device: torch.device, shape: ModelConfig = SHAPE, vocab: int = VOCAB,
         ) -> tuple[Transformer, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Our model in training mode, its fused AdamW (the train stage's) and a constant learning rate."""
    model = Transformer(shape, vocab, PAD).to(device).train()
    optimizer = make_optimizer(model, TRAIN)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def torch_baseline(device: torch.device, cfg: ModelConfig = SHAPE, vocab: int = VOCAB
                   ) -> tuple[TorchTransformer, torch.optim.Optimizer]:
    """``nn.Transformer`` dressed as ours, with the same fused AdamW."""
    model = TorchTransformer(cfg, vocab).to(device).train()
    return model, torch.optim.AdamW(model.parameters(), lr=TRAIN.lr, betas=(TRAIN.beta1, TRAIN.beta2), fused=True)


def measure_shape(length: int, device: torch.device, repeats: int, peak_flops: float | None = None) -> dict:
    """Ours and torch's at one shape, in this process: tokens/s, ratio, and (given the peak) MFU.

    Ours is built and warmed up first, so the peak RSS read before torch's model exists is ours alone.
    """
    torch.manual_seed(0)
    batch = random_batch(length, device)
    model, optimizer, scheduler = ours(device)

    def our_step() -> None:
        with autocast(device):
            optimizer_step(model, [batch], optimizer, scheduler, TRAIN)

    for _ in range(2):
        our_step()
    rss_ours = peak_rss_mb()
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None

    baseline, base_opt = torch_baseline(device)

    def base_step() -> None:
        with autocast(device):
            torch_step(baseline, batch, base_opt)

    for _ in range(2):
        base_step()
    out = timed_pair(our_step, base_step, batch, length, repeats, device, peak_flops)
    out["peak_rss_mb"] = round(rss_ours, 1)
    if cuda_peak is not None:
        out["peak_cuda_mb"] = round(cuda_peak, 1)
    return out


def timed_pair(our_step, base_step, batch: Batch, length: int, repeats: int, device: torch.device,
               peak_flops: float | None) -> dict:
    """Both steps timed in turns: tokens/s, ours / torch's, our step's seconds and FLOPs, and MFU."""
    seconds = interleaved_medians({"ours": our_step, "torch": base_step}, repeats, device)
    ours_s, torch_s = seconds["ours"], seconds["torch"]
    flops = train_step_flops(SHAPE, VOCAB, BATCH, length, length)
    out = {
        "length": length,
        "train_tok_s": round(batch.n_tokens / ours_s),
        "torch_transformer_tok_s": round(batch.n_tokens / torch_s),
        "train_speedup_vs_torch": round(torch_s / ours_s, 3),
        "step_s": round(ours_s, 5),
        "step_flops": flops,
    }
    if peak_flops:
        out["mfu"] = round(flops / ours_s / peak_flops, 4)
    return out


def measure_compiled(length: int, device: torch.device, repeats: int, peak_flops: float | None = None) -> dict:
    """Ours and torch's at one shape, each model through ``torch.compile``: tokens/s, ratio, MFU.

    The optimizer step stays eager (fused AdamW is one kernel already); the compile happens in the
    untimed warm-up steps, and the shape never changes, so nothing recompiles while timed.
    """
    torch.manual_seed(0)
    batch = random_batch(length, device)
    model, optimizer, scheduler = ours(device)
    compiled = torch.compile(model)
    baseline, base_opt = torch_baseline(device)
    compiled_base = torch.compile(baseline)

    def our_step() -> None:
        with autocast(device):
            optimizer_step(compiled, [batch], optimizer, scheduler, TRAIN)

    def base_step() -> None:
        with autocast(device):
            torch_step(compiled_base, batch, base_opt)

    t0 = time.perf_counter()
    for _ in range(3):  # the first compiles forward and backward; the next ones settle
        our_step()
        base_step()
    compile_s = time.perf_counter() - t0
    return {**timed_pair(our_step, base_step, batch, length, repeats, device, peak_flops),
            "warmup_s": round(compile_s, 1)}


def measure_in_subprocess(length: int, device: str, repeats: int, peak_flops: float) -> dict:
    """One shape in a fresh process, so its peak RSS is that shape's alone."""
    cmd = [sys.executable, "-m", "benchmarks.train_step", "--length", str(length), "--device", device,
           "--repeats", str(repeats), "--peak-flops", str(peak_flops)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- input pipeline
def django_like_split(vocab_size: int | None = None, n: int = 16_000,
                      seed: int = 0) -> tuple[TokenizedSplit, Tokenizer]:
    """``n`` synthetic pairs with Django's length spread (sources 4-60 tokens, targets 3-50), random
    ids below ``vocab_size`` (default: the byte-level tokenizer's own), and the tokenizer whose
    special ids (padding, BOS, EOS) batching uses."""
    rng = np.random.default_rng(seed)
    tok = Tokenizer([])  # specials and bytes only
    vocab = tok.vocab_size if vocab_size is None else vocab_size
    src_len, tgt_len = rng.integers(4, 61, n), rng.integers(3, 51, n)
    split = TokenizedSplit.from_arrays(
        (rng.integers(3, vocab, src_len.sum()), np.concatenate(([0], np.cumsum(src_len)))),
        (rng.integers(3, vocab, tgt_len.sum()), np.concatenate(([0], np.cumsum(tgt_len)))),
        vocab,
    )
    return split, tok


def data_wait_share(device: torch.device, steps: int) -> dict:
    """Share of step time spent making batches, with the real Batches over Django-sized data.

    16,000 synthetic pairs with Django's length spread (sources 4-60 tokens, targets 3-50), the
    4,096-token budget of the recipe, our model at the benchmark shape: the same loop as the train
    stage, timed the same way (``data_wait_share`` in metrics/train.json).
    """
    from nmt.training.stream import Batches

    split, tok = django_like_split()
    cfg = TrainConfig(batch_tokens=4096)
    t0 = time.perf_counter()
    batches = iter(Batches(split, tok, cfg, SHAPE.max_len, seed=0))
    setup_s = time.perf_counter() - t0
    model = Transformer(SHAPE, tok.vocab_size, tok.pad_id).to(device).train()
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    data_s = total_s = 0.0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(batches).to(device, non_blocking=True)
        t1 = time.perf_counter()
        with autocast(device):
            optimizer_step(model, [batch], optimizer, scheduler, cfg)
        synchronize(device)
        if step:  # the first step warms up
            data_s += t1 - t0
            total_s += time.perf_counter() - t0
    return {"data_wait_share": round(data_s / total_s, 4), "batches_setup_s": round(setup_s, 3),
            "data_wait_steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, required=True, help="source and target length of the batch")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per model (median reported)")
    ap.add_argument("--peak-flops", type=float, default=0.0, help="measured peak FLOP/s, for MFU (0 = no MFU)")
    ap.add_argument("--compile", action="store_true", help="both models through torch.compile (module docstring)")
    args = ap.parse_args()
    measure = measure_compiled if args.compile else measure_shape
    print(json.dumps(measure(args.length, torch.device(args.device), args.repeats, args.peak_flops or None)))


if __name__ == "__main__":
    main()
