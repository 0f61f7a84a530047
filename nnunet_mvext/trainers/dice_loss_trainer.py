"""``nnUNetTrainerMVDiceLoss``: soft Dice without cross-entropy; see
:mod:`nnunet_mvext.training_setup.segmentation_losses`."""

from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV


class nnUNetTrainerMVDiceLoss(nnUNetTrainerMV):
    """``loss: dice`` (defining: the plans may not set another loss), with deep supervision, regions and ignore
    labels as in nnU-Net."""

    settings_defaults = {"loss": "dice"}
    defining_settings = ("loss",)
