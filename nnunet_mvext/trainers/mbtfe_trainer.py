"""``nnUNetTrainerMBTFE``: trains :class:`~nnunet_mvext.architectures.mbtfe_unet.MBTFEUNet` on any plain-U-Net plan.

The network is built from the configuration's plan: a ``PlainConvUNet`` plan (nnU-Net's default) gets the same
channels, stages, kernels, strides and ops plus the MBTFE/EAB knobs (defaults unless the plan sets them); a plan that
already names ``MBTFEUNet`` (template ``3d_fullres_mbtfe``, or ``nnunet-mvext plan``) is used as it is, knobs
included. Before nnU-Net creates the results folder the plan is checked and its copy for this training names
``MBTFEUNet`` with every knob resolved (:mod:`nnunet_mvext.planning.mbtfe_plans`), so the model folder's ``plans.json``
describes the network that was trained. ``trainer_settings`` apply as for every trainer of this package, so
Adan + MBTFE is a plans entry.
"""

from __future__ import annotations

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.mbtfe_plans import MBTFE_CLASS, PLAIN_CLASS, resolve_mbtfe_configuration
from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV


class nnUNetTrainerMBTFE(nnUNetTrainerMV):
    """nnU-Net training of ``MBTFEUNet`` (multi-branch encoder + edge aggregation), built from the plan."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        plans = resolve_mbtfe_configuration(plans, configuration, as_mbtfe=True)
        super().__init__(plans, configuration, fold, dataset_json, device)

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
