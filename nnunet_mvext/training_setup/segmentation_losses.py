"""Segmentation losses selected by ``trainer_settings.loss``, with one deep-supervision weighting for all of them.

Both losses are nnU-Net's own classes (``nnunetv2.training.loss.compound_losses``), so regions and ignore labels
behave exactly as in ``nnUNetTrainer``:

- ``dice_ce``: ``DC_and_CE_loss`` (labels) or ``DC_and_BCE_loss`` (regions), weights 1 and 1.
- ``dice``: the same classes with the cross-entropy weight 0: soft Dice only (``MemoryEfficientSoftDiceLoss``,
  background excluded for labels, included for regions as nnU-Net does), with the ignore label masked out of the Dice.

Deep supervision: output ``i`` (0 = full resolution) gets ``w_i = 2**-i``, the lowest resolution gets 0, and the
weights are normalised to sum to 1 (nnU-Net's rule). Under DDP the lowest weight is 1e-6 instead of 0 so that its
segmentation head still receives a gradient (DDP without ``find_unused_parameters`` fails otherwise). nnU-Net's
``nnUNetTrainerDiceLoss`` copies this block and drops the DDP case; here it lives once, in
:func:`deep_supervision_weights`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunet_mvext.errors import MVExtError

if TYPE_CHECKING:  # a type hint only: nnU-Net's label handling imports its data-loading stack (blosc2, ...)
    from nnunetv2.utilities.label_handling.label_handling import LabelManager


def deep_supervision_weights(num_outputs: int, is_ddp: bool) -> np.ndarray:
    """Weights ``(num_outputs,)`` summing to 1: ``2**-i``, lowest output 0 (1e-6 under DDP)."""
    weights = np.array([1 / (2 ** i) for i in range(num_outputs)])
    if num_outputs > 1:
        weights[-1] = 1e-6 if is_ddp else 0.0
    return weights / weights.sum()


def build_segmentation_loss(loss: str, label_manager: LabelManager, batch_dice: bool, is_ddp: bool) -> torch.nn.Module:
    """nnU-Net's loss for ``loss`` ('dice_ce' or 'dice'), without deep supervision."""
    if loss not in ("dice_ce", "dice"):
        raise MVExtError(f"loss '{loss}' is not known. Allowed: 'dice_ce', 'dice'.")
    weight_ce = 1 if loss == "dice_ce" else 0
    if label_manager.has_regions:
        return DC_and_BCE_loss({}, {"batch_dice": batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": is_ddp},
                               weight_ce=weight_ce, weight_dice=1,
                               use_ignore_label=label_manager.ignore_label is not None,
                               dice_class=MemoryEfficientSoftDiceLoss)
    return DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": is_ddp}, {},
                          weight_ce=weight_ce, weight_dice=1, ignore_label=label_manager.ignore_label,
                          dice_class=MemoryEfficientSoftDiceLoss)


def with_deep_supervision(loss: torch.nn.Module, num_outputs: int, is_ddp: bool) -> torch.nn.Module:
    """Wrap ``loss`` with nnU-Net's ``DeepSupervisionWrapper`` and :func:`deep_supervision_weights`."""
    return DeepSupervisionWrapper(loss, deep_supervision_weights(num_outputs, is_ddp))
