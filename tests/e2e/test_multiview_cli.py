"""Multi-view classification through nnU-Net's CLI on the session workspace (a new configuration, one channel used):
nnUNetv2_train -tr nnUNetTrainerMultiViewABAF -> branch-named validation -> predict-cls --roi -> evaluate-cls.

The workspace's dataset is reused (a new dataset costs about 50 s of nnUNetv2_plan_and_preprocess on a 2-core
machine); ``phase_channels: [[0]]`` makes it one-channel data, so the views alone are fused. It is also the suite's
end-to-end run of a classification-only model (``segmentation: false``: lesion-centred training, validation localised
by the ground truth, predict-cls --roi), the path the 3D fusion trainers take with that setting."""

import csv
import glob
import os
from pathlib import Path

import pytest
import torch

from conftest import DATASET_ID, run

pytestmark = pytest.mark.e2e
CONFIG = "3d_mv_tiny"
TRAINER = "nnUNetTrainerMultiViewABAF"
BRANCHES = ["arterial_axial", "arterial_coronal", "arterial_sagittal"]


@pytest.fixture(scope="module")
def multiview_model(workspace):
    run(["nnunet-mvext", "add-config", DATASET_ID, "3d_tiny_cpu", "--name", CONFIG], workspace.env)
    workspace.set_trainer_settings(CONFIG, num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1,
                                   phase_channels=[[0]])
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", TRAINER, "-device", "cpu"], workspace.env)
    return workspace.model_folder(TRAINER, CONFIG)


def test_training_logs_and_validates_per_branch(multiview_model):
    folder = os.path.join(multiview_model, "fold_0")
    log = Path(glob.glob(os.path.join(folder, "training_log_*.txt"))[0]).read_text()
    assert "2.5D views axial = axis 0 (32 planes), coronal = axis 1 (32 planes), sagittal = axis 2" in log
    assert "mean phase weights beta (validation cases): arterial_axial" in log
    with open(os.path.join(folder, "validation", "classification.csv")) as f:
        header, *rows = list(csv.reader(f))
    assert [h for h in header if h.startswith("beta_")] == [f"beta_{b}" for b in BRANCHES]
    # no decoder: the final validation localises with the ground-truth lesion, as predict-cls --roi does
    assert rows and {r[header.index("roi")] for r in rows} == {"lesion"}
    assert not os.path.isfile(os.path.join(folder, "validation", "summary.json"))  # no segmentation
    info = torch.load(os.path.join(folder, "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)["case_classification"]
    assert info["views"] == ["axial", "coronal", "sagittal"] and info["view_slices"] == 1
    assert info["branch_names"] == BRANCHES and info["segmentation"] is False


@pytest.fixture(scope="module")
def predictions(workspace, multiview_model, tmp_path_factory):
    """predict-cls --roi with the held-out lesion masks; the refusal without --roi first."""
    images = os.path.join(workspace.raw, workspace.dataset_name, "imagesTs")
    labels = os.path.join(workspace.raw, workspace.dataset_name, "labelsTs")
    out = tmp_path_factory.mktemp("multiview_pred")
    base = ["nnunet-mvext", "predict-cls", "-i", images, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr", TRAINER,
            "-device", "cpu", "--disable_tta"]
    refused = run(base + ["-o", out / "no_roi"], workspace.env, check=False)
    run(base + ["-o", out / "pred", "--roi", labels], workspace.env)
    return refused, out / "pred", labels


def test_predict_cls_needs_roi_and_classifies_with_it(predictions):
    refused, out, _ = predictions
    assert refused.returncode == 2 and "pass --roi FOLDER" in refused.stderr
    assert not (out.parent / "no_roi").exists()  # refused before any output was written
    with open(out / "classification.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(abs(float(r["p_persistent"]) + float(r["p_washout"]) - 1) < 1e-4 for r in rows)
    assert not glob.glob(str(out / "*.nii.gz"))


def test_predict_cls_columns_are_the_branches_and_evaluate_cls_reads_them(workspace, predictions):
    _, out, labels = predictions
    with open(out / "classification.csv") as f:
        rows = list(csv.DictReader(f))
    assert [h for h in rows[0] if h.startswith("beta_")] == [f"beta_{b}" for b in BRANCHES]
    assert all(r["roi"] == "lesion" and r["decision_rule"] == "argmax" for r in rows)
    run(["nnunet-mvext", "evaluate-cls", "-ref", os.path.join(labels, "classification.csv"), "-pred",
         out / "classification.csv", "-o", out / "eval"], workspace.env)
