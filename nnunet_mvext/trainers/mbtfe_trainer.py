"""``nnUNetTrainerMBTFE``: trains :class:`~nnunet_mvext.architectures.mbtfe_unet.MBTFEUNet` on any plain-U-Net plan.

The network is built from the configuration's plan: a ``PlainConvUNet`` plan (nnU-Net's default) gets the same
channels, stages, kernels, strides and ops plus the MBTFE/EAB defaults; a plan that already names ``MBTFEUNet``
(template ``3d_fullres_mbtfe``, or ``nnunet-mvext plan --preset mbtfe``) is used as it is, knobs included.
``trainer_settings`` apply as for every trainer of this package, so Adan + MBTFE is a plans entry.
"""

from __future__ import annotations

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

MBTFE_CLASS = "nnunet_mvext.architectures.mbtfe_unet.MBTFEUNet"
PLAIN_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


class nnUNetTrainerMBTFE(nnUNetTrainerMV):
    """nnU-Net training of ``MBTFEUNet`` (multi-branch encoder + edge aggregation), built from the plan."""

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        class_name = configuration_manager.network_arch_class_name
        if class_name not in (MBTFE_CLASS, PLAIN_CLASS):
            raise MVExtError(f"nnUNetTrainerMBTFE builds on a plain U-Net plan, but the configuration's "
                             f"architecture.network_class_name is '{class_name}'. Allowed: '{PLAIN_CLASS}' or "
                             f"'{MBTFE_CLASS}'.")
        return get_network_from_plans(MBTFE_CLASS, configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)
