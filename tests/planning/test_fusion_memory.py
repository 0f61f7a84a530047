"""Memory of the fusion network against its plan: the training-log warning for many phases (none for one), and nnU-Net's
planner sizing patch and batch for P phase encoders (``nnunet-mvext plan --preset fusion``). Networks on the meta
device; no training, no data."""

import copy
import json
import os
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.fusion_memory import (
    PLANNED_ESTIMATE_KEY,
    PLANNED_PHASES_KEY,
    WARN_FACTOR,
    fusion_feature_map_size,
    log_fusion_memory,
    memory_note,
)
from nnunet_mvext.planning.fusion_planner import FusionPlanner

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
FEATURES = [32, 64, 128, 256, 320, 320]
#: nnU-Net's typical 3d_fullres plan: patch 128^3, 6 stages, features 32..320, strides 1,2,2,2,2,2
ARCH_KWARGS = {"n_stages": 6, "features_per_stage": FEATURES, "conv_op": "torch.nn.modules.conv.Conv3d",
               "kernel_sizes": [[3, 3, 3]] * 6, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5,
               "n_conv_per_stage": [2] * 6, "n_conv_per_stage_decoder": [2] * 5, "conv_bias": True,
               "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
               "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
               "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def configuration(patch=(128, 128, 128), **extra):
    config = {"data_identifier": "d", "batch_size": 2, "patch_size": list(patch), "spacing": [1.0, 1.0, 1.0],
              "architecture": {"network_class_name": PLAIN, "arch_kwargs": ARCH_KWARGS,
                               "_kw_requires_import": IMPORTS}, **extra}
    plans = {"dataset_name": "Dataset780_Mem", "plans_name": "nnUNetPlans", "configurations": {"3d_fullres": config}}
    return PlansManager(plans).get_configuration("3d_fullres")


def fusion_net(phases: int, segmentation: bool = True, width: float = 0.0) -> MultiPhaseFusionNet:
    """The fusion network on the meta device; ``width``: its classification encoder (1: the trainers' default)."""
    from nnunet_mvext.planning.fusion_memory import _imported

    with torch.device("meta"):
        return MultiPhaseFusionNet(PLAIN, {**_imported(ARCH_KWARGS, IMPORTS), "deep_supervision": True}, phases, 3, 2,
                                   "abaf", segmentation=segmentation, classification_encoder_width=width)


def test_eight_phases_warn_with_the_factor_and_what_to_do_one_phase_does_not():
    warn, text = memory_note(fusion_net(8), configuration(), 8, 3, "Dataset780_Mem")
    assert warn and text.startswith("WARNING: MultiPhaseFusionNet (8 phase encoder(s))")
    assert "3.95x the plan's plain U-Net's 453.7 M" in text and f"above {WARN_FACTOR}x" in text
    assert "batch size 2" in text and "phase_channels" in text and "shared_encoder' saves parameters" in text
    assert "`nnunet-mvext plan Dataset780_Mem --preset fusion --phases 8`" in text and "nnUNetPlansFusionP8" in text
    assert "'segmentation': false (no decoder: 3.15x)" in text
    assert "classification_encoder_width" not in text  # this network has none
    warn, text = memory_note(fusion_net(8, width=1.0), configuration(), 8, 3, "Dataset780_Mem")
    ours = fusion_net(8, width=1.0).compute_conv_feature_map_size([128] * 3) / 453.7e6
    assert warn and f"{ours:.2f}x the plan's plain U-Net's" in text and ours > 3.95 + 0.5
    assert "'classification_encoder_width': 0 (the case class read from the segmentation encoders: 3.95x)" in text
    warn, text = memory_note(fusion_net(1), configuration(), 1, 3, "Dataset780_Mem")
    assert not warn and "WARNING" not in text and "1.20x the plan's plain U-Net's" in text
    warn, _ = memory_note(fusion_net(2), configuration(), 2, 3, "Dataset780_Mem")
    assert warn  # 1.59x: the first extra encoder


def test_a_patch_planned_for_the_phases_is_compared_with_its_planned_estimate():
    planned = fusion_feature_map_size(PLAIN, ARCH_KWARGS, IMPORTS, (128, 128, 128), 4, 3)
    cm = configuration(**{PLANNED_ESTIMATE_KEY: planned, PLANNED_PHASES_KEY: 4})
    warn, text = memory_note(fusion_net(4, width=1.0), cm, 4, 3, "Dataset780_Mem")
    assert not warn and "planned patch and batch size for 4 phases" in text
    eight = fusion_net(8, width=1.0)
    warn, text = memory_note(eight, cm, 8, 3, "Dataset780_Mem")
    ratio = eight.compute_conv_feature_map_size([128] * 3) / planned
    assert warn and ratio > 1.5 and f"{ratio:.2f}x the {planned / 1e6:.1f} M that nnunet-mvext plan" in text


def test_the_note_goes_to_the_training_log():
    lines = []
    trainer = SimpleNamespace(print_to_log_file=lambda *a, **k: lines.append(" ".join(map(str, a))),
                              configuration_manager=configuration(), num_input_channels=8,
                              label_manager=SimpleNamespace(num_segmentation_heads=3),
                              plans_manager=SimpleNamespace(dataset_name="Dataset780_Mem"))
    log_fusion_memory(trainer, fusion_net(8))
    assert len(lines) == 1 and lines[0].startswith("WARNING: MultiPhaseFusionNet (8 phase encoder(s))")


@pytest.fixture
def fake_dataset(tmp_path, monkeypatch):
    """A raw dataset with 8 channels (empty image files: planning reads dataset.json and the fingerprint only) and
    the fingerprint of 160^3 images at 1 mm."""
    name = "Dataset781_FusionPlan"
    raw, pre = tmp_path / "raw" / name, tmp_path / "pre" / name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    pre.mkdir(parents=True)
    for case in ("case_000", "case_001"):
        for c in range(8):
            (raw / "imagesTr" / f"{case}_{c:04d}.nii.gz").touch()
        (raw / "labelsTr" / f"{case}.nii.gz").touch()
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): f"phase{c}" for c in range(8)}, "labels": {"background": 0, "liver": 1, "lesion": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    (pre / "dataset_fingerprint.json").write_text(json.dumps({
        "spacings": [[1.0, 1.0, 1.0]] * 2, "shapes_after_crop": [[160, 160, 160]] * 2,
        "median_relative_size_after_cropping": 1.0}))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    return name


def test_the_fusion_planner_estimate_grows_with_the_phases_and_nnunet_shrinks_patch_and_batch(fake_dataset):
    default = FusionPlanner(fake_dataset)
    assert default.phases == 8 and default.plans_identifier == "nnUNetPlansFusionP8"  # one phase per channel
    planners = {p: copy.copy(default) for p in (1, 4)}  # (a new planner lists the dataset with a process pool)
    for p, planner in planners.items():
        planner.phases = p
    planners[8] = default
    patch = [128, 128, 128]  # nnU-Net's plain plan for these images
    estimates = [planners[p].static_estimate_VRAM_usage(patch, 8, 3, PLAIN, ARCH_KWARGS, IMPORTS) for p in (1, 4, 8)]
    assert estimates[0] < estimates[1] < estimates[2]
    # the trainers' default network (one encoder per phase and the classification encoder): the same activations
    assert estimates[2] == fusion_feature_map_size(PLAIN, ARCH_KWARGS, IMPORTS, patch, 8, 3) == \
        fusion_net(8, width=1.0).compute_conv_feature_map_size(patch)
    assert fusion_feature_map_size(PLAIN, ARCH_KWARGS, IMPORTS, patch, 8, 3, classification_encoder_width=0) == \
        fusion_net(8).compute_conv_feature_map_size(patch) < estimates[2]
    assert fusion_feature_map_size(PLAIN, ARCH_KWARGS, IMPORTS, patch, 8, 3, segmentation=False) == \
        fusion_net(8, segmentation=False).compute_conv_feature_map_size(patch)  # no decoder: no classification encoder
    plans = {p: planners[p].get_plans_for_configuration([1.0, 1.0, 1.0], [160, 160, 160], "d", 1e12, {})
             for p in (1, 8)}
    volume = {p: plans[p]["batch_size"] * torch.tensor(plans[p]["patch_size"]).prod().item() for p in plans}
    assert volume[8] < volume[1] <= 2 * 128 ** 3
    reference = planners[8].UNet_reference_val_3d  # nnU-Net's budget at its default 8 GB, for batch 2
    for p, config in plans.items():
        assert config["architecture"]["network_class_name"] == PLAIN  # the fusion trainers build on the plain plan
        a = config["architecture"]
        planned = fusion_feature_map_size(PLAIN, a["arch_kwargs"], a["_kw_requires_import"], config["patch_size"], p, 3)
        assert planned * config["batch_size"] / 2 <= reference
    assert estimates[2] > reference  # the plain plan's patch would not have fitted 8 encoders


def test_plan_refuses_phases_outside_the_preset_or_the_channels(fake_dataset):
    from nnunet_mvext.planning.plan_command import plan_dataset

    with pytest.raises(MVExtError, match="--phases 4 applies to --preset fusion"):
        plan_dataset(fake_dataset, preset="mbtfe", phases=4)
    with pytest.raises(MVExtError, match="--phases 9: Dataset781_FusionPlan has 8 channel"):
        plan_dataset(fake_dataset, preset="fusion", phases=9)
    assert os.listdir(os.path.join(os.environ["nnUNet_preprocessed"], fake_dataset)) == ["dataset_fingerprint.json"]
