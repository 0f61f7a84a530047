"""Multi-phase classification through nnU-Net's CLI: set-classes -> nnUNetv2_train -tr nnUNetTrainerFusionABAF
-> classification_summary.json -> predict-cls -> evaluate-cls (CPU, tiny configuration)."""

import csv
import glob
import json
import os

import pytest

from conftest import DATASET_ID, run

pytestmark = pytest.mark.e2e
CONFIG = "3d_tiny_cpu"
TRAINER = "nnUNetTrainerFusionABAF"


@pytest.fixture(scope="module")
def fusion_model(workspace, tmp_path_factory):
    cases = json.load(open(os.path.join(workspace.raw, workspace.dataset_name, "cases.json")))["Tr"]
    labels_csv = tmp_path_factory.mktemp("labels") / "labels.csv"
    labels_csv.write_text("case_id,class\n" + "".join(f"{c['case_id']},{c['label']}\n" for c in cases))
    run(["nnunet-mvext", "set-classes", DATASET_ID, labels_csv, "--class-names", "persistent,washout"],
        workspace.env)
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", TRAINER, "-device", "cpu"], workspace.env)
    return workspace.model_folder(TRAINER, CONFIG)


def test_set_classes_refuses_an_unknown_case(workspace, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,class\ncase_000,0\nno_such_case,1\n")
    proc = run(["nnunet-mvext", "set-classes", DATASET_ID, bad], workspace.env, check=False)
    assert proc.returncode == 2 and "no_such_case" in proc.stderr


def test_training_writes_classification_validation(fusion_model):
    folder = os.path.join(fusion_model, "fold_0")
    summary = json.load(open(os.path.join(folder, "validation", "classification_summary.json")))
    for key in ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "cohen_kappa",
                "confusion_matrix"):
        assert key in summary
    assert summary["class_names"] == ["persistent", "washout"]
    rows = list(csv.reader(open(os.path.join(folder, "validation", "classification.csv"))))
    assert rows[0][:4] == ["case_id", "predicted_class", "p_persistent", "p_washout"] and len(rows) == 1 + 2
    assert os.path.isfile(os.path.join(folder, "validation", "summary.json"))  # nnU-Net's segmentation validation
    assert os.path.isfile(os.path.join(folder, "progress_classification.png"))
    log = open(glob.glob(os.path.join(folder, "training_log_*.txt"))[0]).read()
    assert "val AUC (patches)" in log and "fusion 'abaf'" in log


def test_predict_cls_and_evaluate_cls(workspace, fusion_model, tmp_path):
    images = os.path.join(workspace.raw, workspace.dataset_name, "imagesTs")
    out = tmp_path / "pred"
    run(["nnunet-mvext", "predict-cls", "-i", images, "-o", out, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr",
         TRAINER, "-device", "cpu", "--disable_tta"], workspace.env)
    cases = sorted(os.path.basename(p)[:-12] for p in glob.glob(os.path.join(images, "*_0000.nii.gz")))
    rows = list(csv.reader(open(out / "classification.csv")))
    assert rows[0] == ["case_id", "predicted_class", "p_persistent", "p_washout", "no_lesion_found"]
    assert sorted(r[0] for r in rows[1:]) == cases
    assert all(abs(float(r[2]) + float(r[3]) - 1) < 1e-4 for r in rows[1:])
    assert sorted(p[:-7] for p in os.listdir(out) if p.endswith(".nii.gz")) == cases

    again = run(["nnunet-mvext", "predict-cls", "-i", images, "-o", out, "-d", DATASET_ID, "-c", CONFIG, "-f", "0",
                 "-tr", TRAINER, "-device", "cpu"], workspace.env, check=False)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    reference = os.path.join(workspace.raw, workspace.dataset_name, "labelsTs", "classification.csv")
    run(["nnunet-mvext", "evaluate-cls", "-ref", reference, "-pred", out / "classification.csv", "-o", out / "eval"],
        workspace.env)
    metrics = json.load(open(out / "eval" / "classification_metrics.json"))
    assert metrics["num_cases"] == len(cases) and "auc" in metrics
    assert (out / "eval" / "roc.png").is_file() and (out / "eval" / "confusion_matrix.png").is_file()

    seg_only = tmp_path / "seg_only"
    run(["nnUNetv2_predict", "-i", images, "-o", seg_only, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr", TRAINER,
         "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], workspace.env)
    assert sorted(p[:-7] for p in os.listdir(seg_only) if p.endswith(".nii.gz")) == cases

    partial = tmp_path / "partial.csv"
    partial.write_text("case_id,class\n" + f"{cases[0]},0\nghost_case,1\n")
    proc = run(["nnunet-mvext", "evaluate-cls", "-ref", partial, "-pred", out / "classification.csv", "-o",
                tmp_path / "e2"], workspace.env, check=False)
    assert proc.returncode == 2 and "ghost_case" in proc.stderr and cases[1] in proc.stderr


def test_unlabelled_training_case_stops_training_by_name(workspace, fusion_model):
    path = os.path.join(workspace.preprocessed, workspace.dataset_name, "dataset.json")
    original = open(path).read()
    meta = json.loads(original)
    del meta["classification"]["labels"]["case_001"]
    open(path, "w").write(json.dumps(meta))
    try:
        proc = run(["nnUNetv2_train", DATASET_ID, CONFIG, "1", "-tr", TRAINER, "-device", "cpu"], workspace.env,
                   check=False)
    finally:
        open(path, "w").write(original)
    assert proc.returncode != 0 and "case_001" in proc.stderr and "no class label" in proc.stderr


def test_classification_only_training_and_prediction(workspace, fusion_model, tmp_path):
    run(["nnunet-mvext", "add-config", DATASET_ID, "3d_tiny_cpu", "--name", "3d_tiny_clsonly"], workspace.env)
    workspace.set_trainer_settings("3d_tiny_clsonly", num_epochs=1, segmentation=False)
    trainer = "nnUNetTrainerFusionConcat"
    run(["nnUNetv2_train", DATASET_ID, "3d_tiny_clsonly", "0", "-tr", trainer, "-device", "cpu"], workspace.env)
    folder = os.path.join(workspace.model_folder(trainer, "3d_tiny_clsonly"), "fold_0", "validation")
    assert "auc" in json.load(open(os.path.join(folder, "classification_summary.json")))
    images = os.path.join(workspace.raw, workspace.dataset_name, "imagesTs")
    out = tmp_path / "pred"
    run(["nnunet-mvext", "predict-cls", "-i", images, "-o", out, "-d", DATASET_ID, "-c", "3d_tiny_clsonly", "-f",
         "0", "-tr", trainer, "-device", "cpu", "--disable_tta"], workspace.env)
    rows = list(csv.reader(open(out / "classification.csv")))[1:]
    assert rows and all(r[-1] == "1" for r in rows)
    assert not [p for p in os.listdir(out) if p.endswith(".nii.gz")]
