"""fusion_classification_results --resume keeps a row's configuration from an earlier run: if the row's settings have
changed in the script since, the run stops instead of training with the old ones."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
from fusion_classification_results import refuse_stale_configuration
from nnunet_mvext.planning.plans_config import load_template


def _plans(tmp_path, trainer_settings):
    folder = tmp_path / "Dataset512_X"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(
        {"configurations": {"3d_abaf_cls_encoder": {"trainer_settings": trainer_settings}}}))
    return {"nnUNet_preprocessed": str(tmp_path)}


def test_a_kept_configuration_with_other_row_settings_stops_the_run(tmp_path):
    template = load_template("3d_tiny_cpu")[1]["configuration"].get("trainer_settings", {})
    env = _plans(tmp_path, {**template, "seed": 0, "classification_encoder_width": 0.5})
    refuse_stale_configuration(env, "Dataset512_X", "r", "3d_abaf_cls_encoder",
                               {"seed": 0, "classification_encoder_width": 0.5})
    with pytest.raises(SystemExit, match=r"classification_encoder_width: 0.5 \(plans\) vs 1.0 \(row\)"):
        refuse_stale_configuration(env, "Dataset512_X", "r", "3d_abaf_cls_encoder",
                                   {"seed": 0, "classification_encoder_width": 1.0})
    with pytest.raises(SystemExit, match=r"classification_encoder_width: 0.5 \(plans\) vs None \(row\)"):
        refuse_stale_configuration(env, "Dataset512_X", "r", "3d_abaf_cls_encoder", {"seed": 0})


def test_a_kept_model_of_another_network_stops_the_run(tmp_path):
    """Same row settings, but the model was trained before classification_encoder_width's default became 1."""
    from fusion_classification_results import refuse_stale_model
    from nnunet_mvext.classification.fusion_setup import CASE_KEY
    from nnunet_mvext.trainers.fusion_trainers import nnUNetTrainerFusionABAF
    from nnunet_mvext.trainers.settings_trainer import settings_from_plans

    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3}, "_kw_requires_import": []}
    plans = {"plans_name": "nnUNetPlans", "dataset_name": "Dataset512_X", "configurations": {"3d_fusion": {
        "data_identifier": "d", "batch_size": 2, "patch_size": [32, 32, 32], "spacing": [1.0] * 3,
        "architecture": arch, "trainer_settings": {"seed": 0}}}}
    dataset_json = {"channel_names": {"0": "a", "1": "b"}, "labels": {"background": 0, "lesion": 1},
                    "file_ending": ".nii.gz", "classification": {"class_names": {"0": "x", "1": "y"},
                                                                 "labels": {"case_0": 0}}}
    pre, res = tmp_path / "pre" / "Dataset512_X", tmp_path / "res" / "Dataset512_X"
    pre.mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    env = {"nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res")}
    cls = nnUNetTrainerFusionABAF
    now = cls.describe_model(plans, "3d_fusion", dataset_json,
                             settings_from_plans(plans, "3d_fusion", cls.settings_defaults, cls.settings_scopes))
    assert now["classification_encoder_width"] == 1.0
    model = res / "nnUNetTrainerFusionABAF__nnUNetPlans__3d_fusion"
    refuse_stale_model(env, "Dataset512_X", "abaf", cls.__name__, "3d_fusion")  # no model yet: nothing to compare
    model.mkdir(parents=True)
    old = {k: v for k, v in now.items() if k != "classification_encoder_width"}
    (model / "plans.json").write_text(json.dumps({"configurations": {"3d_fusion": {CASE_KEY: now}}}))
    refuse_stale_model(env, "Dataset512_X", "abaf", cls.__name__, "3d_fusion")  # the same network: kept
    (model / "plans.json").write_text(json.dumps({"configurations": {"3d_fusion": {CASE_KEY: old}}}))
    with pytest.raises(SystemExit, match=r"row abaf: the model in .* was trained with another network than the row "
                                         r"gives now \(classification_encoder_width: absent \(off: 0 or false\) -> "
                                         r"1.0\)"):
        refuse_stale_model(env, "Dataset512_X", "abaf", cls.__name__, "3d_fusion")
    # the previous release's row (--baseline-code) trains an older network on purpose
    refuse_stale_model(env, "Dataset512_X", "base", cls.__name__, "3d_fusion")
