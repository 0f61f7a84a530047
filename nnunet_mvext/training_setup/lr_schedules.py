"""Epoch-based learning-rate schedule: linear warmup, then nnU-Net's poly decay or a cosine decay.

With ``E`` epochs, ``W`` warmup epochs, peak ``lr0`` and epoch ``e`` (0-based)::

    e <  W:  lr = lr0 * (e + 1) / W
    e >= W:  t = (e - W) / (E - W)
             poly:   lr = lr0 * (1 - t) ** 0.9              (nnU-Net's PolyLRScheduler when W = 0)
             cosine: lr = lr0 * 0.5 * (1 + cos(pi * t))

Like nnU-Net's ``PolyLRScheduler`` it is a pure function of the epoch that ``on_train_epoch_start`` passes to
``step``, so resuming with ``--c`` needs no scheduler state.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler


def learning_rate_at(epoch: int, initial_lr: float, num_epochs: int, warmup_epochs: int, schedule: str,
                     exponent: float = 0.9) -> float:
    """The learning rate of ``epoch`` (equations in the module docstring)."""
    if epoch < warmup_epochs:
        return initial_lr * (epoch + 1) / warmup_epochs
    t = min(1.0, (epoch - warmup_epochs) / max(1, num_epochs - warmup_epochs))
    if schedule == "poly":
        return initial_lr * (1 - t) ** exponent
    if schedule == "cosine":
        return initial_lr * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown lr_schedule '{schedule}'")


class WarmupScheduler(_LRScheduler):
    """Sets every parameter group's lr to :func:`learning_rate_at` of the epoch given to ``step``."""

    def __init__(self, optimizer: Optimizer, initial_lr: float, num_epochs: int, warmup_epochs: int = 0,
                 schedule: str = "poly"):
        self.initial_lr = initial_lr
        self.num_epochs = num_epochs
        self.warmup_epochs = warmup_epochs
        self.schedule = schedule
        self.ctr = 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = learning_rate_at(current_step, self.initial_lr, self.num_epochs, self.warmup_epochs, self.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self._last_lr
