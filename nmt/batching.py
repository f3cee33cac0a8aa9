"""Length-bucketed, token-budget batches: similar lengths together, so little compute goes to padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    src: torch.Tensor  # (B, S) source ids, ending in EOS, right-padded
    src_mask: torch.Tensor  # (B, S) True for real source tokens
    tgt_in: torch.Tensor  # (B, T) BOS + target ids, right-padded
    tgt_out: torch.Tensor  # (B, T) target ids + EOS, right-padded
    n_tokens: int  # real target tokens (the loss denominator)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The batch on ``device``; ``non_blocking`` overlaps the copy with compute (from pinned memory)."""
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.src, self.src_mask, self.tgt_in,
                                                                          self.tgt_out)), self.n_tokens)

    def pin_memory(self) -> "Batch":
        """The batch in page-locked memory: only from there is a ``to(cuda, non_blocking=True)`` copy async."""
        return Batch(*(t.pin_memory() for t in (self.src, self.src_mask, self.tgt_in, self.tgt_out)), self.n_tokens)


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Right-pad to a (len(seqs), max_len) long tensor."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def source_ids(ids: Sequence[int], eos_id: int, max_len: int) -> list[int]:
    """Source as the encoder sees it: truncated to fit, then EOS (never empty)."""
    return list(ids[: max_len - 1]) + [eos_id]


def collate(
    srcs: Sequence[Sequence[int]],
    tgts: Sequence[Sequence[int]],
    pad_id: int,
    bos_id: int,
    eos_id: int,
    max_len: int,
) -> Batch:
    src = pad([source_ids(s, eos_id, max_len) for s in srcs], pad_id)
    tgts = [list(t[: max_len - 1]) for t in tgts]
    tgt_in = pad([[bos_id] + t for t in tgts], pad_id)
    tgt_out = pad([t + [eos_id] for t in tgts], pad_id)
    return Batch(src, src != pad_id, tgt_in, tgt_out, sum(len(t) + 1 for t in tgts))


def token_budget_batches(
    src_lengths: Sequence[int],
    tgt_lengths: Sequence[int],
    batch_tokens: int,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Group example indices into batches whose padded size (rows x (S + T)) fits ``batch_tokens``.

    Examples are sorted by (target, source) length, with a random tie-break when a generator is
    given, so each epoch groups differently; the batch order is shuffled by the caller. An example
    longer than the budget on its own still gets a batch of one.
    """
    n = len(src_lengths)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    order.sort(key=lambda i: (tgt_lengths[i], src_lengths[i]))  # stable: ties keep the random order
    batches: list[list[int]] = []
    current: list[int] = []
    max_src = max_tgt = 0
    for i in order:
        s, t = max(max_src, src_lengths[i] + 1), max(max_tgt, tgt_lengths[i] + 1)  # +1: EOS / BOS
        if current and (len(current) + 1) * (s + t) > batch_tokens:
            batches.append(current)
            current, s, t = [], src_lengths[i] + 1, tgt_lengths[i] + 1
        current.append(i)
        max_src, max_tgt = s, t
    if current:
        batches.append(current)
    return batches
