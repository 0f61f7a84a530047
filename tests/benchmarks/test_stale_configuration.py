"""fusion_classification_results --resume keeps a row's configuration from an earlier run: if the row's settings have
changed in the script since, the run stops instead of training with the old ones."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
from fusion_classification_results import refuse_stale_configuration
from nnunet_mvext.plans_config import load_template


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
