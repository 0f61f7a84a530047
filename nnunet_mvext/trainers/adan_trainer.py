"""``nnUNetTrainerMVAdan``: Adan (timm, foreach) with warmup; see :mod:`nnunet_mvext.training_setup.optimizers`."""

from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV


class nnUNetTrainerMVAdan(nnUNetTrainerMV):
    """``optimizer: adan`` (defining: the plans may not set another optimizer): lr 1e-3, decoupled weight decay
    0.02 (not on norms/biases), 5 % warmup."""

    settings_defaults = {"optimizer": "adan"}
    defining_settings = ("optimizer",)
