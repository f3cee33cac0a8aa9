"""The training batches: an endless, resumable, length-bucketed stream, and each rank's slice of it."""

from __future__ import annotations

import torch

from nmt.batching import Batch, collate, token_budget_batches
from nmt.config import TrainConfig
from nmt.data.tokenized import TokenizedSplit
from nmt.tokenizer import Tokenizer
from nmt.training.distributed import Dist


def as_lists(split: TokenizedSplit, n: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Python lists of the first ``n`` pairs' ids (the dev set: decoded batch after batch)."""
    return split.lists(range(len(split) if n is None else n))


class Batches:
    """Endless stream of training batches: a fresh bucketing and shuffled order each epoch.

    Only the lengths are held in Python; a batch's ids are sliced from the split's tensors (memory-
    mapped from the tokenize stage's file) as it is made, so memory does not grow with the ids.
    """

    def __init__(self, split: TokenizedSplit, tok: Tokenizer, cfg: TrainConfig, max_len: int, seed: int):
        self.split, self.tok, self.cfg, self.max_len = split, tok, cfg, max_len
        self.src_lengths = split.src_lengths.clamp(max=max_len - 1).tolist()
        self.tgt_lengths = split.tgt_lengths.clamp(max=max_len - 1).tolist()
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0  # batches of the current epoch handed out so far
        self._epoch_start = self.generator.get_state()  # the generator as the current epoch began
        self._skip = 0

    def __iter__(self):
        while True:
            self._epoch_start = self.generator.get_state()
            self.epoch += 1
            batches = token_budget_batches(self.src_lengths, self.tgt_lengths, self.cfg.batch_tokens, self.generator)
            order = torch.randperm(len(batches), generator=self.generator).tolist()
            self.position, self._skip = self._skip, 0
            while self.position < len(order):
                self.position += 1
                yield self.make(batches[order[self.position - 1]])

    def state_dict(self) -> dict:
        """Where the stream stands: the epoch, the generator as it began, the batches handed out."""
        return {"epoch": self.epoch, "epoch_start": self._epoch_start, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue a stream from :meth:`state_dict`: the same epoch's batches, from the same place
        (call before iterating). The epoch is rebuilt from its generator state, not stored."""
        self.generator.set_state(state["epoch_start"])
        self.epoch = max(0, state["epoch"] - 1)  # __iter__ counts the epoch again as it rebuilds it
        self._skip = state["position"]

    def make(self, indices: list[int]) -> Batch:
        return collate(
            *self.split.lists(indices), self.tok.pad_id, self.tok.bos_id, self.tok.eos_id, self.max_len,
        )


class RankSlices:
    """This rank's micro-batches of each step, cut from the one global stream every rank walks.

    A step takes the next ``world_size x accumulate`` batches of the stream; rank r keeps the
    r-th run of ``accumulate`` of them. The stream's position (what a resume checkpoint records)
    is global, so a run resumes on any number of processes where it stopped in the data.
    """

    def __init__(self, stream, d: Dist, accumulate: int, pin_memory: bool = False):
        self.stream, self.d, self.accumulate, self.pin_memory = stream, d, accumulate, pin_memory

    def __iter__(self):
        return self

    def __next__(self) -> list[Batch]:
        group = [next(self.stream) for _ in range(self.d.world_size * self.accumulate)]
        mine = group[self.d.rank * self.accumulate : (self.d.rank + 1) * self.accumulate]
        # Pinned here rather than as the stream collates: the other ranks' batches are never copied.
        return [b.pin_memory() for b in mine] if self.pin_memory else mine
