"""evaluate-cls --cv: pooling the folds' validation CSVs, refusing missing/duplicated/overlapping folds, the
per-fold table and the stored Youden threshold."""

import json
import os

import numpy as np
import pytest

from nnunet_mvext.classification.cross_validation import THRESHOLD_FILE, evaluate_cross_validation
from nnunet_mvext.classification.metrics import classification_metrics, read_predictions_csv, youden_threshold
from nnunet_mvext.classification.prediction_table import write_case_predictions
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError

DATASET = "Dataset777_Fake"
MODEL = "nnUNetTrainerFusionABAF__nnUNetPlans__3d_tiny"
NAMES = ["neg", "pos"]


@pytest.fixture()
def results(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    folder = tmp_path / "nnUNet_results" / DATASET / MODEL
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cases = [f"case_{i:03d}" for i in range(50)]
    y = np.array([i % 2 for i in range(50)])
    p1 = np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.2, 50), 0.001, 0.999)
    probs = np.round(np.c_[1 - p1, p1], 6)
    labels = {c: int(v) for c, v in zip(cases, y)}
    (folder / "dataset.json").write_text(json.dumps({"classification": {
        "class_names": {"0": "neg", "1": "pos"}, "labels": labels}}))
    for fold in range(5):
        idx = list(range(fold, 50, 5))
        val = folder / f"fold_{fold}" / "validation"
        val.mkdir(parents=True)
        write_case_predictions(str(val / "classification.csv"), [cases[i] for i in idx], probs[idx], NAMES,
                               ["lesion"] * len(idx), y_true=y[idx])
    return {"folder": folder, "cases": cases, "y": y, "probs": probs, "out": tmp_path / "cv"}


def test_pooled_out_of_fold_metrics_and_per_fold_table(results):
    r = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]),
                                  n_resamples=200)
    order = [i for fold in range(5) for i in range(fold, 50, 5)]
    pooled = classification_metrics(results["y"][order], results["probs"][order], NAMES)
    assert r["pooled"]["num_cases"] == 50 and r["pooled"]["auc"] == pytest.approx(pooled["auc"])
    assert r["pooled"]["intervals"]["auc"]["method"] == "DeLong"
    fold_aucs = []
    for fold in range(5):
        idx = list(range(fold, 50, 5))
        fold_aucs.append(classification_metrics(results["y"][idx], results["probs"][idx], NAMES)["auc"])
        assert r["per_fold"][str(fold)]["auc"] == pytest.approx(fold_aucs[-1])
    assert r["per_fold_summary"]["auc"]["mean"] == pytest.approx(np.mean(fold_aucs))
    assert r["per_fold_summary"]["auc"]["sd"] == pytest.approx(np.std(fold_aucs, ddof=1))
    out = results["out"]
    cases, names, probs = read_predictions_csv(str(out / "oof_classification.csv"))
    assert cases == [results["cases"][i] for i in order] and names == NAMES
    np.testing.assert_allclose(probs, results["probs"][order])
    for name in ("cv_metrics.json", "pooled_metrics.json", "report.md", "roc.png", "reliability.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "## Per fold" in report and "| mean ± sd |" in report and "pooled out-of-fold" in report
    assert r["threshold_file"] is None and not (results["folder"] / THRESHOLD_FILE).exists()


def test_missing_fold_is_refused_unless_folds_are_named(results, capsys):
    os.remove(results["folder"] / "fold_3" / "validation" / "classification.csv")
    with pytest.raises(MVExtError, match="fold 3 .* name the folds you have with -f 0 1 2 4"):
        evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]))
    assert not results["out"].exists()
    r = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]),
                                  folds=["0", "1", "2", "4"], n_resamples=50)
    assert r["pooled"]["num_cases"] == 40 and r["folds"] == [0, 1, 2, 4]
    with pytest.raises(MVExtError, match="No validation/classification.csv for fold 3"):
        evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]), folds=["0", "3"])


@pytest.mark.parametrize("folds, message", [(["0", "1", "1"], "names fold 1 more than once"),
                                            (["all"], "Fold 'all' trains on every case")])
def test_duplicated_and_all_folds_are_refused(results, folds, message):
    with pytest.raises(MVExtError, match=message):
        evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]), folds=folds)


def test_overlapping_cases_between_folds_are_refused(results):
    c, y, p = results["cases"], results["y"], results["probs"]
    write_case_predictions(str(results["folder"] / "fold_4" / "validation" / "classification.csv"),
                           [c[4], c[0]], p[[4, 0]], NAMES, ["lesion", "lesion"], y_true=y[[4, 0]])
    with pytest.raises(MVExtError, match="case_000 appear in the validation of fold 0 and of fold 4"):
        evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]))


def test_labels_that_disagree_with_the_true_class_column_are_refused(results):
    block = json.loads((results["folder"] / "dataset.json").read_text())
    block["classification"]["labels"]["case_007"] = 1 - block["classification"]["labels"]["case_007"]
    (results["folder"] / "dataset.json").write_text(json.dumps(block))
    with pytest.raises(MVExtError, match="disagree for 1 case\\(s\\): case_007"):
        evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]))


def test_store_threshold_writes_the_exact_format(results, capsys):
    argv = ["evaluate-cls", "--cv", "-d", "777", "-c", "3d_tiny", "-o", str(results["out"]), "--store-threshold",
            "--n-bootstrap", "50"]
    assert main(argv) == 0
    assert "| mean ± sd |" in capsys.readouterr().out
    stored = json.loads((results["folder"] / THRESHOLD_FILE).read_text())
    order = [i for fold in range(5) for i in range(fold, 50, 5)]
    expected = youden_threshold(results["y"][order], results["probs"][order, 1])["threshold"]
    assert stored == {"threshold": pytest.approx(expected), "positive_class": "pos",
                      "chosen_on": "pooled out-of-fold predictions of folds [0, 1, 2, 3, 4]", "method": "youden"}
    assert main(argv) == 0  # again: the previous file is kept as a backup
    assert [f for f in os.listdir(results["folder"]) if f.startswith(THRESHOLD_FILE) and f.endswith(".bak")]
    assert main(["evaluate-cls", "--cv", "-d", "777", "-c", "3d_tiny", "-f", "0", "0", "-o", "x"]) == 2


def test_multiclass_cv_reports_the_lld_mmri_score_pooled_and_per_fold(results):
    names = ["a", "b", "c"]
    rng = np.random.default_rng(4)
    y = np.arange(50) % 3
    probs = np.round(rng.dirichlet(np.ones(3), 50) + 0.3 * np.eye(3)[y], 6)
    probs /= probs.sum(1, keepdims=True)
    (results["folder"] / "dataset.json").write_text(json.dumps({"classification": {
        "class_names": {"0": "a", "1": "b", "2": "c"}, "labels": {c: int(v) for c, v in zip(results["cases"], y)}}}))
    for fold in range(5):
        idx = list(range(fold, 50, 5))
        write_case_predictions(str(results["folder"] / f"fold_{fold}" / "validation" / "classification.csv"),
                               [results["cases"][i] for i in idx], probs[idx], names, ["lesion"] * len(idx),
                               y_true=y[idx])
    r = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]), n_resamples=100)
    pooled = r["pooled"]
    assert pooled["lld_mmri_score"] == pytest.approx((pooled["f1"] + pooled["cohen_kappa"]) / 2)
    assert pooled["intervals"]["lld_mmri_score"]["low"] < pooled["lld_mmri_score"]
    fold_scores = [r["per_fold"][str(f)]["lld_mmri_score"] for f in range(5)]
    assert r["per_fold_summary"]["lld_mmri_score"]["mean"] == pytest.approx(np.mean(fold_scores))
    report = (results["out"] / "report.md").read_text()
    assert report.count("LLD-MMRI challenge score") >= 2  # the pooled table and the per-fold table's column


def test_folds_validated_with_a_checkpoint_selected_on_them_are_warned_about(results, caplog):
    c, y, p = results["cases"], results["y"], results["probs"]
    for fold, checkpoint, selected in [(0, "checkpoint_final.pth", 0), (2, "checkpoint_best_auc.pth", 1)]:
        idx = list(range(fold, 50, 5))
        write_case_predictions(str(results["folder"] / f"fold_{fold}" / "validation" / "classification.csv"),
                               [c[i] for i in idx], p[idx], NAMES, ["lesion"] * len(idx), y_true=y[idx],
                               provenance={"checkpoint": checkpoint, "checkpoint_selected_on_these_cases": selected})
    with caplog.at_level("WARNING"):
        r = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]),
                                      n_resamples=50)
    warnings = r["pooled"]["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("fold 2: predicted with checkpoint_best_auc.pth, which was "
                                                         "selected on these same validation cases")
    assert "fold 2: predicted with checkpoint_best_auc.pth" in caplog.text
    assert r["provenance"]["0"] == {"checkpoint": "checkpoint_final.pth", "checkpoint_selected_on_these_cases": "0"}
    assert "folds 1, 3, 4 names no checkpoint" in r["pooled"]["provenance_note"]
    assert "**WARNING: fold 2: predicted with checkpoint_best_auc.pth" in (results["out"] / "report.md").read_text()
    # the marker does not disturb the CSV reader, and evaluate-cls on the fold's CSV alone warns as well
    fold2 = results["folder"] / "fold_2" / "validation" / "classification.csv"
    assert read_predictions_csv(str(fold2))[1] == NAMES
    from nnunet_mvext.classification.evaluation import evaluate_classification

    single = evaluate_classification(str(results["folder"] / "dataset.json"), str(fold2), str(results["out"] / "f2"),
                                     chill=True, n_resamples=20)
    assert single["warnings"][0].startswith("classification.csv: predicted with checkpoint_best_auc.pth")


def test_folds_initialised_from_another_folds_segmentation_model_are_warned_about(results):
    c, y, p = results["cases"], results["y"], results["probs"]
    own = {"checkpoint": "checkpoint_final.pth", "checkpoint_selected_on_these_cases": 0}
    for fold, pretrained, stored in [(0, "/seg/fold_0.pth", "0"), (1, "/seg/fold_1.pth", "1"),
                                     (2, "/seg/fold_0.pth", "0"), (3, "/seg/bare.pth", ""), (4, "", "")]:
        idx = list(range(fold, 50, 5))
        write_case_predictions(str(results["folder"] / f"fold_{fold}" / "validation" / "classification.csv"),
                               [c[i] for i in idx], p[idx], NAMES, ["lesion"] * len(idx), y_true=y[idx],
                               provenance={**own, "pretrained_checkpoint": pretrained,
                                           "pretrained_checkpoint_fold": stored})
    r = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]), n_resamples=50)
    warnings = r["pooled"]["warnings"]
    assert [w.split(":")[0] for w in warnings] == ["fold 2", "fold 3",
                                                   "folds 0, 2 were all initialised from /seg/fold_0.pth"]
    assert "trained on fold 0" in warnings[0] and "which names no fold" in warnings[1]
    assert "provenance_note" not in r["pooled"]


def test_cv_counts_the_pooled_cases_without_a_predicted_lesion(results):
    c, y, p = results["cases"], results["y"], results["probs"]
    idx = list(range(1, 50, 5))
    write_case_predictions(str(results["folder"] / "fold_1" / "validation" / "classification.csv"),
                           [c[i] for i in idx], p[idx], NAMES, ["none", "none"] + ["lesion"] * 8, y_true=y[idx])
    r = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]), n_resamples=50)
    local = r["pooled"]["lesion_localisation"]
    assert local["cases"] == ["case_001", "case_006"] and local["metrics_with_predicted_lesion_only"]["num_cases"] == 48
    assert "2 of 50 cases had no predicted lesion" in (results["out"] / "report.md").read_text()


def test_fold_columns_are_matched_by_class_name(results):
    before = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]),
                                       n_resamples=20)
    c, y, p = results["cases"], results["y"], results["probs"]
    idx = list(range(2, 50, 5))
    path = results["folder"] / "fold_2" / "validation" / "classification.csv"
    path.write_text("case_id,predicted_class,p_pos,p_neg,true_class\n" + "".join(
        f"{c[i]},{NAMES[int(p[i, 1] >= 0.5)]},{p[i, 1]:.6f},{p[i, 0]:.6f},{NAMES[y[i]]}\n" for i in idx))
    after = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"] / "2"),
                                      n_resamples=20)
    assert after["pooled"]["auc"] == pytest.approx(before["pooled"]["auc"])
    assert after["per_fold"]["2"] == before["per_fold"]["2"] and after["pooled"]["class_names"] == NAMES
    path.write_text("case_id,predicted_class,p_pos,p_other\n" + "".join(f"{c[i]},pos,0.5,0.5\n" for i in idx))
    with pytest.raises(MVExtError, match="only in .*fold_2/validation/classification.csv \\(its p_<class> columns\\): "
                                         "'other'; only in .*dataset.json: 'neg'"):
        evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"] / "3"))


def test_fold_csvs_saved_by_a_spreadsheet_are_read(results, caplog):
    caplog.set_level("INFO")
    order = [i for fold in range(5) for i in range(fold, 50, 5)]
    expected = classification_metrics(results["y"][order], results["probs"][order], NAMES)["auc"]
    for fold, encoding in ((1, "utf-16"), (3, "cp1252")):
        path = results["folder"] / f"fold_{fold}" / "validation" / "classification.csv"
        path.write_bytes(path.read_text(encoding="utf-8").replace("lesion", "lésion").encode(encoding))
    after = evaluate_cross_validation("777", "3d_tiny", "nnUNetTrainerFusionABAF", str(results["out"]),
                                      n_resamples=20)
    assert after["pooled"]["auc"] == pytest.approx(expected)
    assert "fold_1/validation/classification.csv as UTF-16 LE (byte-order mark)" in caplog.text
    assert "fold_3/validation/classification.csv as Windows-1252 (cp1252)" in caplog.text
