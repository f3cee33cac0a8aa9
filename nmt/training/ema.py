"""Exponential moving average of a model's weights (``train.ema_decay``).

After every optimizer step, each floating-point parameter and buffer of the average moves towards
the training weights::

    d_t   = min(decay, (1 + t) / (10 + t))       t = 1, 2, ... the number of updates so far
    avg_t = d_t * avg_{t-1} + (1 - d_t) * w_t     avg_0 = the weights at the start

The warm-up of ``d_t`` (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``) keeps the
average from clinging to the random initial weights early in a short run. The average is held in
float32 whatever the training dtype, in a copy of the model that is never trained: the train loop
scores the dev split with it and saves it as the best checkpoint, while the training weights keep
training.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).float().eval()  # the average: same structure, float32
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """``d_t`` of the next update."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimizer step)."""
        d = self.current_decay()
        self.updates += 1
        # parameters() and buffers() list a shared tensor once, so nothing is averaged twice.
        pairs = [*zip(self.model.parameters(), model.parameters()), *zip(self.model.buffers(), model.buffers())]
        for avg, value in pairs:
            if avg.is_floating_point():
                avg.lerp_(value.to(avg.dtype), 1.0 - d)  # avg += (1 - d) * (value - avg)
            else:
                avg.copy_(value)
