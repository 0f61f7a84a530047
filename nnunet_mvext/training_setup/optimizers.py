"""Optimizers selected by ``trainer_settings.optimizer``.

- ``sgd``: exactly nnU-Net's ``nnUNetTrainer.configure_optimizers`` (Nesterov, momentum 0.99, coupled L2 decay on
  every parameter), so ``nnUNetTrainerMV`` with defaults trains like ``nnUNetTrainer``.
- ``adan``: ``timm.optim.Adan`` (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
  Deep Models", arXiv:2208.06677) on its ``foreach`` path. Unlike ``adan-pytorch`` (used by nnU-Net's own
  ``nnUNetTrainerAdan``), timm's version applies the first update (the gradient difference starts at zero, not the
  update). Decoupled weight decay goes to conv/linear weights only: parameters with ``ndim <= 1`` (norm weights and
  every bias) form a second group with ``weight_decay = 0`` (the rule of timm's ``param_groups_weight_decay``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from timm.optim import Adan

from nnunet_mvext.errors import MVExtError


def weight_decay_param_groups(network: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: conv/linear weights with ``weight_decay``; norm weights and biases (ndim <= 1) without."""
    decay, no_decay = [], []
    for param in network.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, network: torch.nn.Module, lr: float, weight_decay: float,
                    adan_betas: Sequence[float] = (0.98, 0.92, 0.99)) -> torch.optim.Optimizer:
    """The optimizer ``name`` ('sgd' or 'adan') over ``network``'s parameters."""
    if name == "sgd":
        return torch.optim.SGD(network.parameters(), lr, weight_decay=weight_decay, momentum=0.99, nesterov=True)
    if name == "adan":
        groups = weight_decay_param_groups(network, weight_decay)
        return Adan(groups, lr=lr, betas=tuple(adan_betas), eps=1e-8, weight_decay=weight_decay, foreach=True)
    raise MVExtError(f"optimizer '{name}' is not known. Allowed: 'sgd', 'adan'.")
