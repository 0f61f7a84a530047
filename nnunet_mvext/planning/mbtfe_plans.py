"""MBTFEUNet configurations in a plans file, as the trainers and ``nnunet-mvext plan`` use them.

- :func:`resolve_mbtfe_configuration` runs in every trainer of this package before nnU-Net creates the results
  folder. When the configuration's network is ``MBTFEUNet`` (the ``3d_fullres_mbtfe`` template, ``nnunet-mvext plan``,
  or ``nnUNetTrainerMBTFE`` on a plain U-Net plan) it checks every knob against
  :mod:`nnunet_mvext.architectures.mbtfe_knobs` and returns a copy of the plans whose configuration holds the class
  name and every knob with its explicit value. nnU-Net keeps that copy as the trainer's plans, so the resolved values
  are written to the model folder's ``plans.json``, to the checkpoint's ``init_args`` and to the training log's
  configuration dump: a trained model does not depend on the defaults of the installed version.
- :func:`log_mbtfe_configuration` writes the knobs and the memory estimate to the training log. nnU-Net's planner
  sizes patch and batch with ``compute_conv_feature_map_size``; a patch planned for the plain U-Net is too large for
  MBTFEUNet by the ratio of the two estimates, and the log says so with that ratio. ``nnunet-mvext plan`` records the
  estimate it planned with (:data:`PLANNED_ESTIMATE_KEY`), and the log compares against that instead.
"""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Callable, Optional

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_mvext.architectures.mbtfe_knobs import KNOB_BY_NAME, resolve_knobs
from nnunet_mvext.errors import MVExtError

MBTFE_CLASS = "nnunet_mvext.architectures.mbtfe_unet.MBTFEUNet"
PLAIN_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
#: configuration key written by ``nnunet-mvext plan``: MBTFEUNet's estimate at the planned patch
PLANNED_ESTIMATE_KEY = "mbtfe_planned_feature_map_size"
#: an estimate this much above the one the patch was planned for is reported as a warning
TOLERANCE = 1.05


def resolve_mbtfe_configuration(plans: dict, configuration: str, as_mbtfe: bool = False) -> dict:
    """``plans`` unchanged unless ``configuration`` builds MBTFEUNet (its class, or ``as_mbtfe`` for a plain U-Net
    plan); then a copy whose configuration names MBTFEUNet with every knob resolved. Raises :class:`MVExtError` naming
    the key for a bad knob, before anything is written."""
    config = PlansManager(plans).get_configuration(configuration).configuration
    architecture = deepcopy(config["architecture"])
    class_name = architecture["network_class_name"]
    where = f"configuration '{configuration}' of plans '{plans.get('plans_name', '?')}'"
    if as_mbtfe and class_name not in (MBTFE_CLASS, PLAIN_CLASS):
        raise MVExtError(f"{where}: nnUNetTrainerMBTFE builds on a plain U-Net plan, but architecture."
                         f"network_class_name is '{class_name}'. Allowed: '{PLAIN_CLASS}' or '{MBTFE_CLASS}'.")
    if class_name != MBTFE_CLASS and not as_mbtfe:
        return plans
    arch_kwargs = architecture["arch_kwargs"]
    arch_kwargs.update(resolve_knobs(arch_kwargs, arch_kwargs["n_stages"], where))
    architecture["network_class_name"] = MBTFE_CLASS
    plans = deepcopy(plans)
    plans["configurations"][configuration]["architecture"] = architecture
    return plans


def feature_map_sizes(configuration_manager: ConfigurationManager, num_classes: int) -> tuple[int, int]:
    """nnU-Net's memory estimate (``compute_conv_feature_map_size`` at the configuration's patch, deep supervision
    on) of MBTFEUNet and of the plain U-Net with the same plan: ``(ours, plain)``. Built on the meta device."""
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    imports = configuration_manager.network_arch_init_kwargs_req_import
    plain_kwargs = {k: v for k, v in kwargs.items() if k not in KNOB_BY_NAME}
    with torch.device("meta"):
        ours = get_network_from_plans(MBTFE_CLASS, kwargs, imports, 1, num_classes, allow_init=False,
                                      deep_supervision=True)
        plain = get_network_from_plans(PLAIN_CLASS, plain_kwargs, imports, 1, num_classes, allow_init=False,
                                       deep_supervision=True)
    patch = configuration_manager.patch_size
    return int(ours.compute_conv_feature_map_size(patch)), int(plain.compute_conv_feature_map_size(patch))


def memory_note(configuration_manager: ConfigurationManager, num_classes: int, dataset_name: str) -> tuple[bool, str]:
    """``(is_warning, text)``: MBTFEUNet's estimate against the one the patch was planned for."""
    ours, plain = feature_map_sizes(configuration_manager, num_classes)
    patch = list(configuration_manager.patch_size)
    batch = configuration_manager.batch_size
    estimate = (f"MBTFEUNet's memory estimate (nnU-Net's compute_conv_feature_map_size, one map per conv output) at "
                f"patch {patch} is {ours / 1e6:.1f} M voxels, {ours / plain:.2f}x the plain U-Net's "
                f"{plain / 1e6:.1f} M")
    planned: Optional[int] = configuration_manager.configuration.get(PLANNED_ESTIMATE_KEY)
    replan = (f"For a patch and batch size planned for MBTFEUNet run `nnunet-mvext plan {dataset_name}` and train "
              f"with `-p nnUNetPlansMBTFE`.")
    if planned is None:
        return True, (f"WARNING: patch {patch} and batch size {batch} of this configuration were planned for the "
                      f"plain U-Net. {estimate}: expect about {ours / plain:.2f}x the plain U-Net's activation "
                      f"memory. {replan}")
    if ours > planned * TOLERANCE:
        return True, (f"WARNING: {estimate}, {ours / planned:.2f}x the {planned / 1e6:.1f} M that nnunet-mvext plan "
                      f"planned patch and batch size for (knobs or patch changed since). {replan}")
    return False, f"{estimate}; nnunet-mvext plan planned patch and batch size for {planned / 1e6:.1f} M."


def log_mbtfe_configuration(trainer) -> None:
    """Write the resolved knobs and the memory note of an MBTFEUNet configuration to the trainer's log."""
    cm = trainer.configuration_manager
    if cm.network_arch_class_name != MBTFE_CLASS:
        return
    log: Callable = trainer.print_to_log_file
    knobs = {k: cm.network_arch_init_kwargs[k] for k in KNOB_BY_NAME}
    log(f"MBTFEUNet knobs (resolved; stored in the model folder's plans.json and the checkpoint's init_args): "
        f"{json.dumps(knobs)}", add_timestamp=False)
    _, text = memory_note(cm, trainer.label_manager.num_segmentation_heads, trainer.plans_manager.dataset_name)
    log(text, add_timestamp=False)
