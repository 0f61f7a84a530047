"""Activation memory of the fusion networks against the plan they train with: the estimates, and the note the fusion
trainers log at training start. The planner for P phase encoders (``nnunet-mvext plan --preset fusion``) is
:class:`~nnunet_mvext.planning.fusion_planner.FusionPlanner`, built on these estimates.

nnU-Net sizes patch and batch so that its memory estimate, ``compute_conv_feature_map_size`` of the plan's network at
the patch (one map per conv output, batch 1), fits a VRAM target (``ExperimentPlanner.get_plans_for_configuration``).
:class:`~nnunet_mvext.architectures.multiphase_fusion_net.MultiPhaseFusionNet` runs one encoder per phase, fuses the
skips with a 1x1 conv per stage and keeps the plan's decoder, so at the same patch and batch its estimate is, on the
6-stage 3d_fullres plan (patch 128^3, features 32..320; ``benchmarks/fusion_memory.py``, ``benchmarks/RESULTS.md``):

=========================================== ======= ======= ======= ======= =======
phases                                      1       2       3       4       8
``classification_encoder_width: 0``         1.20x   1.59x   1.98x   2.38x   3.95x
default (classification encoder, width 1)   1.29x   1.79x   2.28x   2.77x   4.74x
=========================================== ======= ======= ======= ======= =======

Each phase adds an encoder's activations (0.39x the plain U-Net's estimate) and, with the classification encoder, its
pass from the second resolution on (about 0.1x per phase); ``shared_encoder`` shares the weights, not the
activations, and ``segmentation: false`` drops the decoder, the fusion convs and the classification encoder (8
phases: 3.15x). A training step on 2 CPU cores (patch 64^3, batch 1; 2026-12-06) took 1.12x-4.19x the plain U-Net's
for 1-8 phases without the classification encoder and 1.17x-5.03x with it.

:func:`memory_note` (logged by the fusion trainers at training start, :func:`log_fusion_memory`) compares the
network's estimate with the plan's plain U-Net at the configuration's patch (the batch size multiplies both) and
warns above :data:`WARN_FACTOR` = 1.5: between one phase (1.20x, 1.29x with the classification encoder: the plan's
network plus one 1x1 fusion conv per stage; measured peak GPU memory of a training step 1.04x) and two phases (1.59x;
measured 1.42x, 7.0 GiB allocated against the plain U-Net's 4.9 GiB at batch 2, fp16, on a plan nnU-Net made for an 8
GB target), so the warning starts with the first extra encoder, whose activations the plan's patch and batch were not
sized for. A configuration planned by :class:`~nnunet_mvext.planning.fusion_planner.FusionPlanner` carries the
estimate it was planned with (:data:`PLANNED_ESTIMATE_KEY`) and is compared against that instead (warning above
:data:`PLANNED_TOLERANCE`, as for MBTFEUNet in :mod:`nnunet_mvext.planning.mbtfe_plans`).
"""

from __future__ import annotations

import pydoc
from typing import Callable, Optional, Sequence

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.classification.fusion_setup import default_classification_encoder_width

#: above this ratio of the fusion network's estimate to the plan's plain U-Net's, the training log warns
WARN_FACTOR = 1.5
#: configuration keys written by :class:`~nnunet_mvext.planning.fusion_planner.FusionPlanner`: the phases and the
#: fusion estimate at the planned patch
PLANNED_PHASES_KEY = "fusion_planned_phases"
PLANNED_ESTIMATE_KEY = "fusion_planned_feature_map_size"
#: an estimate this much above the one the patch was planned for is reported as a warning
PLANNED_TOLERANCE = 1.05


def _imported(arch_kwargs: dict, requires_import: Sequence[str]) -> dict:
    kwargs = dict(arch_kwargs)
    for key in requires_import:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    return kwargs


def plain_feature_map_size(arch_class_name: str, arch_kwargs: dict, requires_import: Sequence[str],
                           patch_size: Sequence[int], num_input_channels: int, num_outputs: int) -> int:
    """nnU-Net's estimate of the plan's own network at ``patch_size`` (built on the meta device, deep supervision on
    as in training)."""
    with torch.device("meta"):
        net = get_network_from_plans(arch_class_name, arch_kwargs, requires_import, num_input_channels, num_outputs,
                                     allow_init=False, deep_supervision=True)
    return int(net.compute_conv_feature_map_size(list(patch_size)))


def fusion_feature_map_size(arch_class_name: str, arch_kwargs: dict, requires_import: Sequence[str],
                            patch_size: Sequence[int], num_phases: int, num_outputs: int,
                            segmentation: bool = True, classification_encoder_width: Optional[float] = None) -> int:
    """The estimate of a :class:`MultiPhaseFusionNet` with ``num_phases`` single-channel phases on the plan's
    architecture (meta device), with the classification encoder of ``classification_encoder_width`` (null: the fusion
    trainers' default for one encoder per phase, :func:`default_classification_encoder_width`). Built with
    ``shared_encoder`` (one encoder module instead of P) and the classification encoder counted apart: the estimate
    counts each phase's encoder activations either way, and the planner's patch search builds it many times."""
    kwargs = {**_imported(arch_kwargs, requires_import), "deep_supervision": True}
    width = (default_classification_encoder_width(False, segmentation, [[0]] * num_phases, int(kwargs["n_stages"]))
             if classification_encoder_width is None else classification_encoder_width)
    with torch.device("meta"):
        net = MultiPhaseFusionNet(arch_class_name, kwargs, num_phases, num_outputs, 2, "concat", shared_encoder=True,
                                  segmentation=segmentation)
        size = int(net.compute_conv_feature_map_size(list(patch_size)))
        if width:
            size += int(MultiPhaseFusionNet.classification_encoder_feature_map_size(
                arch_class_name, kwargs, list(patch_size), num_phases, width))
    return size


def _options(network: torch.nn.Module, patch: Sequence[int], plain: int, dataset_name: str, phases: int) -> str:
    text = (f"To cut activation memory: fewer phase encoders (trainer_settings 'phase_channels' groups channels into "
            f"one encoder per group), a patch and batch size planned for {phases} phase encoders "
            f"(`nnunet-mvext plan {dataset_name} --preset fusion --phases {phases}`, then `-p "
            f"nnUNetPlansFusionP{phases}`)")
    decoder = getattr(network, "decoder", None)
    encoders = getattr(network, "encoders", None)
    if isinstance(network, MultiPhaseFusionNet) and getattr(network, "classification_encoder", None) is not None:
        pooled = [i // j for i, j in zip(patch, network.classification_pool)]
        saved = int(network.classification_encoder.compute_conv_feature_map_size(pooled)) * phases
        ours = int(network.compute_conv_feature_map_size(list(patch)))
        text += (f", 'classification_encoder_width': 0 (the case class read from the segmentation encoders: "
                 f"{(ours - saved) / plain:.2f}x)")
    if isinstance(network, MultiPhaseFusionNet) and decoder is not None and encoders is not None:
        without = int(encoders[0].compute_conv_feature_map_size(list(patch))) * phases
        text += f", or 'segmentation': false (no decoder: {without / plain:.2f}x)"
    return text + ". 'shared_encoder' saves parameters, not activations."


def memory_note(network: torch.nn.Module, configuration_manager: ConfigurationManager, num_input_channels: int,
                num_outputs: int, dataset_name: str) -> tuple[bool, str]:
    """``(is_warning, text)``: ``network``'s estimate at the configuration's patch against the plan's plain U-Net's
    (or, for a configuration planned by :class:`~nnunet_mvext.planning.fusion_planner.FusionPlanner`, against the
    estimate it was planned with)."""
    cm = configuration_manager
    patch = list(cm.patch_size)
    ours = int(network.compute_conv_feature_map_size(patch))
    plain = plain_feature_map_size(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, patch, num_input_channels, num_outputs)
    phases = len(getattr(network, "phase_channels", [])) or num_input_channels
    estimate = (f"{type(network).__name__} ({phases} phase encoder(s)): memory estimate (nnU-Net's "
                f"compute_conv_feature_map_size, one map per conv output) at patch {patch} {ours / 1e6:.1f} M voxels "
                f"per sample, {ours / plain:.2f}x the plan's plain U-Net's {plain / 1e6:.1f} M")
    planned: Optional[int] = cm.configuration.get(PLANNED_ESTIMATE_KEY)
    if planned is not None:
        planned_phases = cm.configuration.get(PLANNED_PHASES_KEY, "?")
        if ours > planned * PLANNED_TOLERANCE:
            return True, (f"WARNING: {estimate}; {ours / planned:.2f}x the {planned / 1e6:.1f} M that nnunet-mvext "
                          f"plan --preset fusion planned patch and batch size {cm.batch_size} for ({planned_phases} "
                          f"phases). Expect about {ours / planned:.2f}x the memory that plan was made for. "
                          + _options(network, patch, plain, dataset_name, phases))
        return False, (f"{estimate}; nnunet-mvext plan --preset fusion planned patch and batch size for "
                       f"{planned_phases} phases ({planned / 1e6:.1f} M).")
    if ours > plain * WARN_FACTOR:
        return True, (f"WARNING: {estimate}, above {WARN_FACTOR}x. Patch {patch} and batch size {cm.batch_size} of "
                      f"this configuration were sized by nnU-Net's planner for the plain U-Net: expect about "
                      f"{ours / plain:.2f}x its activation memory; on the GPU that plan was made for, the training "
                      f"will likely run out of memory. " + _options(network, patch, plain, dataset_name, phases))
    return False, f"{estimate} (warning above {WARN_FACTOR}x)."


def log_fusion_memory(trainer, network: torch.nn.Module) -> None:
    """Write :func:`memory_note` for ``network`` (the trainer's unwrapped network) to the trainer's log."""
    log: Callable = trainer.print_to_log_file
    _, text = memory_note(network, trainer.configuration_manager, trainer.num_input_channels,
                          trainer.label_manager.num_segmentation_heads, trainer.plans_manager.dataset_name)
    log(text)
