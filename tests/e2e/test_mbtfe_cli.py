"""MBTFE through nnU-Net's CLI: train (with its final validation), the plan command and its memory-aware patch size."""

import glob
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import DATASET_ID, run

pytestmark = pytest.mark.e2e
CONFIG = "3d_tiny_cpu"
TRAINER = "nnUNetTrainerMBTFE"


@pytest.fixture(scope="module")
def mbtfe_model(workspace):
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", TRAINER, "-device", "cpu"], workspace.env)
    return workspace.model_folder(TRAINER, CONFIG)


def test_checkpoint_holds_mbtfe_and_eab_and_loads_into_a_fresh_network(workspace, mbtfe_model):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mvext.trainers.mbtfe_trainer import nnUNetTrainerMBTFE

    ckpt = torch.load(os.path.join(mbtfe_model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)
    keys = ckpt["network_weights"].keys()
    assert any(k.startswith("mbtfe.") for k in keys) and any(k.startswith("eab.") for k in keys)
    arch = ckpt["init_args"]["plans"]["configurations"][CONFIG]["architecture"]
    assert arch["network_class_name"].endswith("MBTFEUNet") and arch["arch_kwargs"]["eab_attention_kernel"] == 7
    log = Path(glob.glob(os.path.join(mbtfe_model, "fold_0", "training_log_*.txt"))[0]).read_text()
    assert "MBTFEUNet knobs (resolved" in log and "were planned for the plain U-Net" in log
    plans = PlansManager(os.path.join(mbtfe_model, "plans.json"))
    net = nnUNetTrainerMBTFE.build_network_architecture(plans, plans.get_configuration(CONFIG), 3, 3, True)
    net.load_state_dict(ckpt["network_weights"], strict=True)


def test_plan_command_reuses_preprocessed_data(workspace):
    run(["nnunet-mvext", "plan", DATASET_ID, "-np", "1"], workspace.env)
    plans_file = os.path.join(workspace.preprocessed, workspace.dataset_name, "nnUNetPlansMBTFE.json")
    config = json.loads(Path(plans_file).read_text())["configurations"]["3d_fullres"]
    assert config["architecture"]["network_class_name"] == "nnunet_mvext.architectures.mbtfe_unet.MBTFEUNet"
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert config["mbtfe_planned_feature_map_size"] > 0 and config["architecture"]["arch_kwargs"]["eab_stages"] == 3
    again = run(["nnunet-mvext", "plan", DATASET_ID], workspace.env, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_planner_shrinks_the_patch_for_the_extra_memory(workspace, monkeypatch):
    """On a large (faked) dataset, with a memory target between the plain U-Net's and MBTFEUNet's estimate at the
    plain patch, nnU-Net's patch-size search keeps the plain patch for the plain U-Net and shrinks it for MBTFEUNet."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    from nnunet_mvext.planning.mbtfe_planner import MBTFEPlanner
    from nnunet_mvext.planning.mbtfe_plans import MBTFE_CLASS, PLAIN_CLASS, PLANNED_ESTIMATE_KEY

    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, workspace.env[key])
    big = "Dataset601_BigFake"
    src_raw = os.path.join(workspace.raw, workspace.dataset_name)
    shutil.copytree(src_raw, os.path.join(workspace.raw, big), dirs_exist_ok=True)
    os.makedirs(os.path.join(workspace.preprocessed, big), exist_ok=True)
    fingerprint = json.loads(Path(os.path.join(workspace.preprocessed, workspace.dataset_name,
                                               "dataset_fingerprint.json")).read_text())
    fingerprint["shapes_after_crop"] = [[256, 256, 256]] * len(fingerprint["shapes_after_crop"])
    with open(os.path.join(workspace.preprocessed, big, "dataset_fingerprint.json"), "w") as f:
        json.dump(fingerprint, f)

    reference = ExperimentPlanner(601, plans_name="PlainTest")
    at_8gb = reference.plan_experiment()["configurations"]["3d_fullres"]
    n_in, n_out = len(reference.dataset_json["channel_names"]), len(reference.dataset_json["labels"])
    arch = at_8gb["architecture"]
    plain_estimate, ours_estimate = (ExperimentPlanner.static_estimate_VRAM_usage(
        at_8gb["patch_size"], n_in, n_out, cls, arch["arch_kwargs"], arch["_kw_requires_import"])
        for cls in (PLAIN_CLASS, MBTFE_CLASS))
    assert ours_estimate > plain_estimate
    target = 8 * (plain_estimate + ours_estimate) / 2 / reference.UNet_reference_val_3d  # GB, between the two

    plain = ExperimentPlanner(601, target, plans_name="PlainTest").plan_experiment()["configurations"]["3d_fullres"]
    ours = MBTFEPlanner(601, target, plans_name="MBTFETest").plan_experiment()["configurations"]["3d_fullres"]
    assert ours["architecture"]["network_class_name"].endswith("MBTFEUNet")
    volume = lambda c: c["patch_size"][0] * c["patch_size"][1] * c["patch_size"][2]  # noqa: E731
    assert list(plain["patch_size"]) == list(at_8gb["patch_size"])
    assert volume(ours) < volume(plain)
    saved = json.loads(Path(os.path.join(workspace.preprocessed, big, "MBTFETest.json")).read_text())
    saved = saved["configurations"]["3d_fullres"]
    assert 0 < saved[PLANNED_ESTIMATE_KEY] <= reference.UNet_reference_val_3d * target / 8
