"""Multi-phase classification through nnU-Net's CLI: set-classes -> nnUNetv2_train -tr nnUNetTrainerFusionABAF
-> classification_summary.json -> predict-cls -> evaluate-cls (CPU, tiny configuration)."""

import csv
import glob
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import DATASET_ID, run

pytestmark = pytest.mark.e2e
CONFIG = "3d_tiny_cpu"
TRAINER = "nnUNetTrainerFusionABAF"


@pytest.fixture(scope="module")
def fusion_model(workspace, tmp_path_factory):
    cases = json.loads(Path(os.path.join(workspace.raw, workspace.dataset_name, "cases.json")).read_text())["Tr"]
    labels_csv = tmp_path_factory.mktemp("labels") / "labels.csv"
    labels_csv.write_text("case_id,class\n" + "".join(f"{c['case_id']},{c['label']}\n" for c in cases))
    run(["nnunet-mvext", "set-classes", DATASET_ID, labels_csv, "--class-names", "persistent,washout"],
        workspace.env)
    # mirrored final validation is covered by the classification-only test below; here it would only cost CPU time
    workspace.set_trainer_settings(CONFIG, validation_mirroring=False)
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", TRAINER, "-device", "cpu"], workspace.env)
    return workspace.model_folder(TRAINER, CONFIG)


def test_set_classes_refuses_an_unknown_case(workspace, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,class\ncase_000,0\nno_such_case,1\n")
    proc = run(["nnunet-mvext", "set-classes", DATASET_ID, bad], workspace.env, check=False)
    assert proc.returncode == 2 and "no_such_case" in proc.stderr


def test_training_writes_classification_validation(fusion_model):
    folder = os.path.join(fusion_model, "fold_0")
    summary = json.loads(Path(os.path.join(folder, "validation", "classification_summary.json")).read_text())
    for key in ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "cohen_kappa",
                "confusion_matrix"):
        assert key in summary
    assert summary["class_names"] == ["persistent", "washout"]
    with open(os.path.join(folder, "validation", "classification.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["case_id", "predicted_class", "p_persistent", "p_washout"] and len(rows) == 1 + 2
    assert os.path.isfile(os.path.join(folder, "validation", "summary.json"))  # nnU-Net's segmentation validation
    assert os.path.isfile(os.path.join(folder, "progress_classification.png"))
    log = Path(glob.glob(os.path.join(folder, "training_log_*.txt"))[0]).read_text()
    assert "validation cases (one patch centred on the ground-truth lesion): macro AUC" in log
    assert "fusion 'abaf'" in log
    assert "mean phase weights beta" in log and "classification loss on" in log
    assert "MultiPhaseFusionNet (3 phase encoder(s)): memory estimate" in log  # at training start
    assert ("WARNING: collapsed classifier" in log) == bool(summary.get("collapse_warning"))
    assert summary["checkpoint"] == "the final weights of this training run"
    assert not summary["checkpoint_selected_on_these_cases"] and not summary["computed_on_training_cases"]
    ckpt = torch.load(os.path.join(folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
    assert ckpt["case_classification"]["fusion"] == "abaf" and ckpt["case_classification"]["network_version"] == 3
    assert set(ckpt["training_case_ids"]) and not set(ckpt["training_case_ids"]) & {r[0] for r in rows[1:]}


def test_predict_cls_and_evaluate_cls(workspace, fusion_model, tmp_path, caplog):
    images = os.path.join(workspace.raw, workspace.dataset_name, "imagesTs")
    out = tmp_path / "pred"
    run(["nnunet-mvext", "predict-cls", "-i", images, "-o", out, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr",
         TRAINER, "-device", "cpu", "--disable_tta"], workspace.env)
    cases = sorted(os.path.basename(p)[:-12] for p in glob.glob(os.path.join(images, "*_0000.nii.gz")))
    with open(out / "classification.csv") as f:
        rows = list(csv.reader(f))
    phases = ("arterial", "portal_venous", "delayed")
    assert rows[0] == (["case_id", "predicted_class", "p_persistent", "p_washout"] + [f"beta_{p}" for p in phases]
                       + [f"aux_{p}_p_{c}" for p in phases for c in ("persistent", "washout")]
                       + ["roi", "no_lesion_found", "decision_rule"])
    assert sorted(r[0] for r in rows[1:]) == cases
    assert all(abs(float(r[2]) + float(r[3]) - 1) < 1e-4 for r in rows[1:])
    assert all(abs(sum(float(v) for v in r[4:7]) - 1) < 1e-4 for r in rows[1:])
    assert all(r[-1] == "argmax" for r in rows[1:])
    assert sorted(p[:-7] for p in os.listdir(out) if p.endswith(".nii.gz")) == cases
    assert (out / "dataset.json").is_file() and (out / "plans.json").is_file()  # as nnUNetv2_predict writes them

    # a second run into the same folder is refused before anything loads (in-process: the check comes first)
    from nnunet_mvext.cli import main

    with caplog.at_level("ERROR"):
        assert main(["predict-cls", "-i", images, "-o", str(out), "-d", str(DATASET_ID), "-c", CONFIG, "-f", "0", "-tr",
                     TRAINER, "-device", "cpu"]) == 2
    assert "refusing to overwrite" in caplog.text
    # the marker
    assert json.loads((out / "predict_cls.json").read_text())["written_by"] == "nnunet-mvext predict-cls"

    # --force into a user's folder (refused without it, in-process in tests/classification/test_inference.py): every
    # file it replaces is kept as a timestamped .bak, the others are left alone
    user = tmp_path / "user_folder"
    user.mkdir()
    (user / "dataset.json").write_text('{"mine": 1}')
    (user / f"{cases[0]}.nii.gz").write_bytes(b"my segmentation")
    (user / "notes.txt").write_text("keep")
    run(["nnunet-mvext", "predict-cls", "-i", images, "-o", user, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr",
         TRAINER, "-device", "cpu", "--disable_tta", "--force"], workspace.env)
    backups = {f.rsplit(".", 2)[0]: (user / f).read_bytes() for f in os.listdir(user) if f.endswith(".bak")}
    assert backups == {"dataset.json": b'{"mine": 1}', f"{cases[0]}.nii.gz": b"my segmentation"}
    assert (user / "notes.txt").read_text() == "keep" and (user / "classification.csv").is_file()

    reference = os.path.join(workspace.raw, workspace.dataset_name, "labelsTs", "classification.csv")
    run(["nnunet-mvext", "evaluate-cls", "-ref", reference, "-pred", out / "classification.csv", "-o", out / "eval"],
        workspace.env)
    metrics = json.loads(Path(out / "eval" / "classification_metrics.json").read_text())
    assert metrics["num_cases"] == len(cases) and "auc" in metrics
    assert (out / "eval" / "roc.png").is_file() and (out / "eval" / "confusion_matrix.png").is_file()

    seg_only = tmp_path / "seg_only"
    run(["nnUNetv2_predict", "-i", images, "-o", seg_only, "-d", DATASET_ID, "-c", CONFIG, "-f", "0", "-tr", TRAINER,
         "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], workspace.env)
    assert sorted(p[:-7] for p in os.listdir(seg_only) if p.endswith(".nii.gz")) == cases


def test_unlabelled_training_case_stops_training_by_name(workspace, fusion_model):
    path = os.path.join(workspace.preprocessed, workspace.dataset_name, "dataset.json")
    original = Path(path).read_text()
    meta = json.loads(original)
    del meta["classification"]["labels"]["case_001"]
    Path(path).write_text(json.dumps(meta))
    try:
        proc = run(["nnUNetv2_train", DATASET_ID, CONFIG, "1", "-tr", TRAINER, "-device", "cpu"], workspace.env,
                   check=False)
    finally:
        Path(path).write_text(original)
    assert proc.returncode != 0 and "case_001" in proc.stderr and "no class label" in proc.stderr


def test_predict_cls_names_the_case_with_a_wrong_channel_count_before_loading(workspace, fusion_model, tmp_path):
    images = tmp_path / "two_channels"
    images.mkdir()
    source = os.path.join(workspace.raw, workspace.dataset_name, "imagesTs")
    case = sorted(os.listdir(source))[0][:-12]
    for c in (0, 1):
        os.symlink(os.path.join(source, f"{case}_{c:04d}.nii.gz"), images / f"{case}_{c:04d}.nii.gz")
    out = tmp_path / "pred"
    proc = run(["nnunet-mvext", "predict-cls", "-i", images, "-o", out, "-d", DATASET_ID, "-c", CONFIG, "-f", "0",
                "-tr", TRAINER, "-device", "cpu"], workspace.env, check=False)
    assert proc.returncode == 2 and f"Case '{case}'" in proc.stderr and "takes 3 channel(s)" in proc.stderr
    assert not out.exists()


def test_predict_cls_warns_about_cases_a_fold_trained_on(workspace, fusion_model, tmp_path):
    ckpt = torch.load(os.path.join(fusion_model, "fold_0", "checkpoint_final.pth"), map_location="cpu",
                      weights_only=False)
    trained_on = ckpt["training_case_ids"][0]
    images = tmp_path / "images"  # one case fold 0 trained on
    images.mkdir()
    for path in glob.glob(os.path.join(workspace.raw, workspace.dataset_name, "imagesTr", f"{trained_on}_*.nii.gz")):
        os.symlink(path, images / os.path.basename(path))
    proc = run(["nnunet-mvext", "predict-cls", "-i", images, "-o", tmp_path / "tr", "-d", DATASET_ID, "-c", CONFIG,
                "-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta"], workspace.env)
    assert "fold 0 was trained on" in proc.stderr and trained_on in proc.stderr


def test_a_bad_fusion_setup_is_refused_before_any_folder_is_created(workspace):
    """Through nnUNetv2_train: the refusal comes before nnU-Net creates the model folder. Every refusal itself is
    tested in-process in tests/classification/test_fusion_setup.py."""
    configuration = "3d_bad_lesion"
    run(["nnunet-mvext", "add-config", DATASET_ID, "3d_tiny_cpu", "--name", configuration], workspace.env)
    workspace.set_trainer_settings(configuration, lesion_label=7)
    proc = run(["nnUNetv2_train", DATASET_ID, configuration, "0", "-tr", TRAINER, "-device", "cpu"], workspace.env,
               check=False)
    assert proc.returncode != 0 and "'lesion_label' is 7, not a foreground label" in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(workspace.model_folder(TRAINER, configuration))


def test_val_reruns_the_final_validation_from_the_checkpoint(workspace, fusion_model):
    """``nnUNetv2_train … --val`` goes through the fusion trainers' load_checkpoint (which checks the stored fusion
    settings first) into nnU-Net's, which reads only a file name. Last in this module: it rewrites the validation."""
    folder = os.path.join(fusion_model, "fold_0", "validation")
    table = Path(folder) / "classification.csv"
    before = {r[0]: r[1] for r in csv.reader(table.read_text().splitlines())}
    os.remove(os.path.join(folder, "classification_summary.json"))
    run(["nnUNetv2_train", DATASET_ID, CONFIG, "0", "-tr", TRAINER, "-device", "cpu", "--val"], workspace.env)
    summary = json.loads(Path(os.path.join(folder, "classification_summary.json")).read_text())
    assert summary["num_cases"] == 2
    after = {r[0]: r[1] for r in csv.reader(table.read_text().splitlines())}
    assert after == before  # the same weights give the same classes
