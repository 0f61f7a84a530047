"""End to end through nnU-Net's own console scripts, as a user runs them, on CPU with a tiny configuration."""

import glob
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import DATASET_ID, run

pytestmark = pytest.mark.e2e
CONFIG = "3d_tiny_cpu"


def _logs(folder):
    texts = []
    for path in sorted(glob.glob(os.path.join(folder, "fold_0", "training_log_*.txt"))):
        with open(path) as f:
            texts.append(f.read())
    return texts


def _epochs(log_text):
    return [int(line.rsplit("Epoch ", 1)[1]) for line in log_text.splitlines()
            if line.split(": ", 1)[-1].startswith("Epoch ") and line.rsplit("Epoch ", 1)[1].strip().isdigit()]


@pytest.fixture(scope="module")
def adan_model(workspace):
    assert "nnUNet_extTrainer" not in workspace.env
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", "nnUNetTrainerMVAdan", "-device", "cpu"], workspace.env)
    return workspace.model_folder("nnUNetTrainerMVAdan", CONFIG)


def test_train_honours_trainer_settings_and_logs_them(adan_model):
    (log,) = _logs(adan_model)
    assert _epochs(log) == [0, 1]
    assert "trainer_settings in force" in log
    assert "optimizer                     = 'adan' (default)" in log
    assert "num_epochs                    = 2 (plans)" in log
    ckpt = torch.load(os.path.join(adan_model, "fold_0", "checkpoint_final.pth"), weights_only=False,
                      map_location="cpu")
    assert ckpt["trainer_name"] == "nnUNetTrainerMVAdan"
    groups = ckpt["optimizer_state"]["param_groups"]
    assert {g["step"] for g in groups} == {2 * 4} and all(g["foreach"] for g in groups)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.02]


def test_predict_and_evaluate(workspace, adan_model, tmp_path):
    images = os.path.join(workspace.raw, workspace.dataset_name, "imagesTs")
    labels = os.path.join(workspace.raw, workspace.dataset_name, "labelsTs")
    out = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", images, "-o", out, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr",
         "nnUNetTrainerMVAdan", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], workspace.env)
    cases = sorted({os.path.basename(p)[:-12] for p in glob.glob(os.path.join(images, "*_0000.nii.gz"))})
    assert sorted(p[:-7] for p in os.listdir(out) if p.endswith(".nii.gz")) == cases

    run(["nnUNetv2_evaluate_folder", labels, out, "-djfile", out / "dataset.json", "-pfile", out / "plans.json",
         "-np", "1"], workspace.env)
    summary = json.loads(Path(out / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    assert 0 <= summary["foreground_mean"]["Dice"] <= 1


def test_misspelled_key_stops_before_anything_is_written(workspace):
    with open(workspace.plans_file) as f:
        plans = json.load(f)
    plans["configurations"]["3d_typo"] = {"inherits_from": CONFIG, "trainer_settings": {"num_epocs": 3}}
    with open(workspace.plans_file, "w") as f:
        json.dump(plans, f, indent=2)
    proc = run(["nnUNetv2_train", DATASET_ID, "3d_typo", "0", "-tr", "nnUNetTrainerMVAdan", "-device", "cpu"],
               workspace.env, check=False)
    assert proc.returncode != 0
    assert "unknown key 'num_epocs'" in proc.stderr and "Did you mean 'num_epochs'" in proc.stderr
    assert not os.path.exists(workspace.model_folder("nnUNetTrainerMVAdan", "3d_typo"))


def test_val_reruns_the_final_validation_of_a_trained_fold(workspace, adan_model):
    """``nnUNetv2_train ... --val`` (docs: works as with nnU-Net's trainers) on the fold trained above: nnU-Net's
    own validation path through our trainer, after the training released its fold lock."""
    summary_file = os.path.join(adan_model, "fold_0", "validation", "summary.json")
    os.remove(summary_file)
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", "nnUNetTrainerMVAdan", "-device", "cpu", "--val"],
        workspace.env)
    with open(summary_file) as f:
        summary = json.load(f)
    assert set(summary["mean"]) == {"1", "2"}
    assert not os.path.exists(os.path.join(adan_model, "fold_0", "nnunet_mvext_fold.lock"))
