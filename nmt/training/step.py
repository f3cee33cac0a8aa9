"""One optimizer step: AdamW with warmup and decay, summed token loss (optionally with R-Drop's
consistency term), clipping, accumulation over micro-batches and processes, NaN/inf steps skipped,
and the step's model FLOPs (for MFU)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from nmt.batching import Batch
from nmt.config import TrainConfig
from nmt.flops import unpadded_train_flops
from nmt.model import Transformer, target_nll
from nmt.training.distributed import Dist, all_sum
from nmt.training.ema import EMA
from nmt.training.precision import FP32, Precision


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matrices of linear layers; norms, biases and embeddings are left alone."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith(("embed.", "pos."))
        (decay if p.dim() >= 2 and not is_embedding else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused: one kernel updates every tensor (CPU and CUDA),
    instead of a handful of small ops per parameter tensor."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr after ``step`` optimizer steps.

    Linear warmup to 1 over ``warmup_steps``; then either inverse square root,
    ``sqrt(warmup / step)``, or a cosine from 1 down to ``min_lr_ratio`` at ``max_steps``.
    """
    warmup = max(1, cfg.warmup_steps)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "inverse_sqrt":
        return math.sqrt(warmup / (step + 1))
    progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def unwrap(model: torch.nn.Module) -> Transformer:
    """The Transformer inside torch.compile's and DistributedDataParallel's wrappers (or the model itself)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, DistributedDataParallel) else model


def batch_loss(model: torch.nn.Module, batch: Batch, label_smoothing: float) -> torch.Tensor:
    """Summed (not averaged) token cross-entropy, so accumulation can divide by the step's tokens."""
    return target_nll(model, unwrap(model).pad_id, batch.src, batch.src_mask, batch.tgt_in, batch.tgt_out,
                      label_smoothing)


def rdrop_losses(model: torch.nn.Module, batch: Batch, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """R-Drop's two terms (Liang et al. 2021), each summed over the batch's real target tokens.

    The batch runs once at twice its size, ``[x; x]``, so its two copies draw independent dropout
    (and word-dropout) masks, P1 and P2 being the two predicted distributions of each target token.
    Returns the mean of the two copies' cross-entropies (the plain loss's scale) and the symmetric
    KL, 1/2 (KL(P1||P2) + KL(P2||P1)) = 1/2 sum_v (p1 - p2)(log p1 - log p2), summed over tokens.
    The paper's loss NLL1 + NLL2 + a/2 (KL(P1||P2) + KL(P2||P1)), halved, is then ``nll + a/2 * kl``.
    """
    pad_id = unwrap(model).pad_id
    scores = model(torch.cat([batch.src, batch.src]), torch.cat([batch.src_mask, batch.src_mask]),
                   torch.cat([batch.tgt_in, batch.tgt_in]))  # (2B, T, V): logits, or log-probabilities (copy)
    log_p = F.log_softmax(scores.float(), dim=-1)  # (2B, T, V); only renormalises the copy model's log-probabilities
    V = log_p.size(-1)
    nll = F.cross_entropy(log_p.reshape(-1, V), torch.cat([batch.tgt_out, batch.tgt_out]).reshape(-1),
                          ignore_index=pad_id, label_smoothing=label_smoothing, reduction="sum") / 2
    # A floor on log p keeps (p1 - p2)(log p1 - log p2) finite where a probability is exactly 0
    # (0 * (-inf - -inf) is NaN); exp(-100) is 0 in float32, so the sum is unchanged.
    log_p1, log_p2 = log_p.clamp_min(-100.0).chunk(2)  # (B, T, V) each
    per_token = ((log_p1.exp() - log_p2.exp()) * (log_p1 - log_p2)).sum(-1)  # (B, T)
    kl = per_token.masked_fill(batch.tgt_out == pad_id, 0.0).sum() / 2
    return nll, kl


@dataclass
class StepResult:
    loss: float  # summed over the step's target tokens, all ranks (R-Drop: the cross-entropy alone)
    grad_norm: float  # before clipping
    tokens: int  # target tokens, all ranks
    flops: float  # model FLOPs (forward + backward) of the step's micro-batches, all ranks
    overflow: bool = False  # fp16: finite loss, inf/NaN gradients; the GradScaler skipped the update
    rdrop_kl: float = 0.0  # R-Drop: the symmetric KL summed over the step's target tokens, all ranks

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)


def micro_batch_flops(model: Transformer, b: Batch) -> int:
    """Model FLOPs of one training pass over ``b``: each sequence at its real source and target
    lengths, so padding (work done, not needed) never counts as useful towards MFU."""
    # One (2, B) copy to the CPU per micro-batch: the per-sequence lengths, not the padded shape.
    src_lengths, tgt_lengths = torch.stack([b.src_mask.sum(1), (b.tgt_out != model.pad_id).sum(1)]).cpu()
    return unpadded_train_flops(model.cfg, model.vocab_size, src_lengths, tgt_lengths)


def optimizer_step(
    model: torch.nn.Module,
    micro: list[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    ema: EMA | None = None,
    d: Dist = Dist(),
    precision: Precision = FP32,
) -> StepResult:
    """One optimizer step over this rank's micro-batches; no update when the loss or the gradient
    norm is NaN/inf.

    Each micro-batch's summed loss is divided by the step's token count (over all ranks) before
    backward, so the gradient is the per-token mean over the whole step however it was split
    across micro-batches and processes (nmt/training/distributed.py: DDP averages over ranks, hence the
    factor world_size).
    """
    device = micro[0].src.device
    scaler = precision.scaler
    passes = 2 if cfg.rdrop else 1  # R-Drop runs each micro-batch twice
    local_flops = passes * sum(micro_batch_flops(unwrap(model), b) for b in micro)
    step_tokens, step_flops = all_sum([float(sum(b.n_tokens for b in micro)), float(local_flops)], d, device)
    step_tokens = int(step_tokens)
    step_loss = step_kl = 0.0
    for i, b in enumerate(micro):
        # Gradients are averaged across ranks once per step, after the last micro-batch.
        sync = nullcontext() if i == len(micro) - 1 or not d.enabled else model.no_sync()
        with sync:
            with precision.autocast():  # forward and loss; backward follows the forward's dtypes by itself
                if cfg.rdrop:
                    loss, kl = rdrop_losses(model, b, cfg.label_smoothing)
                    objective = loss + cfg.rdrop / 2 * kl
                    step_kl += kl.item()
                else:
                    loss = objective = batch_loss(model, b, cfg.label_smoothing)
            scaled = objective * d.world_size / step_tokens
            (scaler.scale(scaled) if scaler else scaled).backward()
        step_loss += loss.item()
    step_loss, step_kl = all_sum([step_loss, step_kl], d, device)
    if scaler:
        scaler.unscale_(optimizer)  # the true gradients, for clipping and the finite check
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm or float("inf")))
    # A NaN/inf loss or gradient would poison the weights and AdamW's moments for good: skip the
    # update (the schedule still advances, so steps and lr stay aligned); the caller counts it.
    result = StepResult(step_loss, grad_norm, step_tokens, step_flops, rdrop_kl=step_kl)
    if result.finite:
        if scaler:
            scaler.step(optimizer)  # after unscale_: the optimizer steps on the true gradients
        else:
            optimizer.step()
        if ema:
            ema.update(unwrap(model))
    if scaler:
        # Overflowing gradients with a finite loss are the scale's fault, not the model's: update()
        # lowers the scale (and raises it after growth_interval clean steps).
        result.overflow = math.isfinite(step_loss) and not result.finite
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return result
