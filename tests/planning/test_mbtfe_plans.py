"""MBTFEUNet configurations through our trainers: knobs checked before nnU-Net creates a folder, resolved values kept
with the model, and the memory warning in the training log."""

import glob
import os
from copy import deepcopy

import pytest
import torch

from nnunet_mvext.architectures.mbtfe_knobs import KNOB_BY_NAME
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.planning.mbtfe_plans import MBTFE_CLASS, PLANNED_ESTIMATE_KEY, feature_map_sizes
from nnunet_mvext.trainers.adan_trainer import nnUNetTrainerMVAdan
from nnunet_mvext.trainers.mbtfe_trainer import nnUNetTrainerMBTFE
from nnunet_mvext.trainers.settings_trainer import nnUNetTrainerMV

DATASET = "Dataset778_Knobs"
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".nii.gz"}
PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def make_plans(**mbtfe_knobs) -> dict:
    """A 4-stage anisotropic plain plan and a template-style child configuration naming MBTFEUNet."""
    n = 4
    arch_kwargs = {"n_stages": n, "features_per_stage": [4, 8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
                   "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                   "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2] * n,
                   "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                   "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                   "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                   "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    plain = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
             "batch_size": 2, "patch_size": [16, 64, 64], "spacing": [3.0, 1.0, 1.0], "batch_dice": False,
             "architecture": {"network_class_name": PLAIN, "arch_kwargs": arch_kwargs,
                              "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}
    mbtfe_arch = deepcopy(plain["architecture"])
    mbtfe_arch["network_class_name"] = MBTFE_CLASS
    mbtfe_arch["arch_kwargs"].update(mbtfe_knobs)
    return {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "label_manager": "LabelManager",
            "continue_training": False,
            "configurations": {"3d_fullres": plain,
                               "3d_fullres_mbtfe": {"inherits_from": "3d_fullres", "architecture": mbtfe_arch}}}


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    return tmp_path / "results"


def training_log(trainer) -> str:
    return open(glob.glob(os.path.join(trainer.output_folder, "training_log_*.txt"))[0]).read()


@pytest.mark.parametrize("knob,value,allowed", [("eab_attention_kernel", 4, "odd integer"),
                                                ("eab_coarse", "false", "JSON boolean"),
                                                ("mbtfe_stages", [9], "stage indices"),
                                                ("mbtfe_stage", [2], "not a knob")])
@pytest.mark.parametrize("trainer", [nnUNetTrainerMVAdan, nnUNetTrainerMBTFE])
def test_bad_knob_is_refused_before_the_results_folder_exists(results, trainer, knob, value, allowed):
    with pytest.raises(MVExtError, match=f"configuration '3d_fullres_mbtfe'.*'{knob}'.*{allowed}"):
        trainer(make_plans(**{knob: value}), "3d_fullres_mbtfe", 0, DATASET_JSON, torch.device("cpu"))
    assert not results.exists()


def test_template_route_keeps_resolved_knobs_with_the_model_and_warns_about_the_patch(results):
    plans = make_plans(mbtfe_stages=None, eab_attention_kernel=5)
    trainer = nnUNetTrainerMVAdan(plans, "3d_fullres_mbtfe", 0, DATASET_JSON, torch.device("cpu"))
    for stored in (trainer.plans_manager.plans, trainer.my_init_kwargs["plans"]):  # plans.json and the checkpoint
        arch_kwargs = stored["configurations"]["3d_fullres_mbtfe"]["architecture"]["arch_kwargs"]
        assert set(KNOB_BY_NAME) <= set(arch_kwargs)
        assert arch_kwargs["mbtfe_stages"] == [2] and arch_kwargs["eab_stages"] == 3
        assert arch_kwargs["eab_attention_kernel"] == 5
    assert plans["configurations"]["3d_fullres_mbtfe"]["architecture"]["arch_kwargs"]["mbtfe_stages"] is None
    ours, plain = feature_map_sizes(trainer.configuration_manager, 2)
    log = training_log(trainer)
    assert '"mbtfe_stages": [2]' in log and '"eab_attention_kernel": 5' in log
    assert "WARNING: patch [16, 64, 64] and batch size 2 of this configuration were planned for the plain U-Net" in log
    assert f"{ours / plain:.2f}x the plain U-Net's" in log and ours > plain


def test_mbtfe_trainer_on_a_plain_plan_stores_the_network_it_trains(results):
    trainer = nnUNetTrainerMBTFE(make_plans(), "3d_fullres", 0, DATASET_JSON, torch.device("cpu"))
    architecture = trainer.my_init_kwargs["plans"]["configurations"]["3d_fullres"]["architecture"]
    assert architecture["network_class_name"] == MBTFE_CLASS and set(KNOB_BY_NAME) <= set(architecture["arch_kwargs"])
    assert "planned for the plain U-Net" in training_log(trainer)
    net = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 2, True)
    assert type(net).__name__ == "MBTFEUNet" and net.knobs == {k: architecture["arch_kwargs"][k] for k in KNOB_BY_NAME}


def test_a_patch_planned_for_mbtfeunet_gives_no_warning_until_the_knobs_grow(results):
    plans = make_plans()
    trainer = nnUNetTrainerMV(deepcopy(plans), "3d_fullres_mbtfe", 0, DATASET_JSON, torch.device("cpu"))
    planned, _ = feature_map_sizes(trainer.configuration_manager, 2)
    plans["configurations"]["3d_fullres_mbtfe"][PLANNED_ESTIMATE_KEY] = planned
    trainer = nnUNetTrainerMV(deepcopy(plans), "3d_fullres_mbtfe", 1, DATASET_JSON, torch.device("cpu"))
    log = training_log(trainer)
    assert "WARNING" not in log and "nnunet-mvext plan planned patch and batch size for" in log
    plans["configurations"]["3d_fullres_mbtfe"]["architecture"]["arch_kwargs"]["mbtfe_stages"] = "all"
    trainer = nnUNetTrainerMV(deepcopy(plans), "3d_fullres_mbtfe", 2, DATASET_JSON, torch.device("cpu"))
    assert "WARNING" in training_log(trainer) and "changed since" in training_log(trainer)


def test_plain_configurations_are_left_alone(results):
    plans = make_plans()
    trainer = nnUNetTrainerMV(plans, "3d_fullres", 0, DATASET_JSON, torch.device("cpu"))
    assert trainer.my_init_kwargs["plans"] is plans
    assert "MBTFEUNet" not in training_log(trainer)


def test_mbtfe_trainer_refuses_another_architecture_before_the_folder(results):
    plans = make_plans()
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "some.ResidualEncoderUNet"
    with pytest.raises(MVExtError, match="network_class_name is 'some.ResidualEncoderUNet'"):
        nnUNetTrainerMBTFE(plans, "3d_fullres", 0, DATASET_JSON, torch.device("cpu"))
    assert not results.exists()
