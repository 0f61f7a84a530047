"""evaluate-cls and compare-cls: input validation before any output, --chill, intervals, calibration, collapse."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from nnunet_mvext.classification.comparison import compare_classifiers, model_labels
from nnunet_mvext.classification.evaluation import evaluate_classification
from nnunet_mvext.classification.metrics import classification_metrics
from nnunet_mvext.classification.prediction_table import write_case_predictions
from nnunet_mvext.classification.statistics import delong_auc, delong_paired_test
from nnunet_mvext.cli import main
from nnunet_mvext.errors import MVExtError

NAMES = ["neg", "pos"]


def _cases(n=40, seed=0, noise=0.25):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
    p1 = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, noise, n), 0.001, 0.999)
    return [f"case_{i:03d}" for i in range(n)], y, np.c_[1 - p1, p1]


def _write_ref(path, cases, y):
    path.write_text("case_id,class\n" + "".join(f"{c},{v}\n" for c, v in zip(cases, y)))
    return str(path)


def _write_dataset_json(folder, names=NAMES):
    """The dataset.json predict-cls writes beside its CSV: integer reference classes are read through its names."""
    block = {"class_names": {str(i): n for i, n in enumerate(names)}, "labels": {}}
    (folder / "dataset.json").write_text(json.dumps({"classification": block}))


def _write_pred(path, cases, probs, names=NAMES, dataset_json=True):
    write_case_predictions(str(path), cases, probs, names, ["lesion"] * len(cases))
    if dataset_json:
        _write_dataset_json(path.parent, names)
    return str(path)


def test_evaluate_writes_intervals_calibration_report_and_plots(tmp_path):
    cases, y, p = _cases()
    ref, pred = _write_ref(tmp_path / "ref.csv", cases, y), _write_pred(tmp_path / "pred.csv", cases, p)
    out = tmp_path / "eval"
    result = evaluate_classification(ref, pred, str(out), n_resamples=300)
    stored = json.loads(Path(out / "classification_metrics.json").read_text())
    d = delong_auc(y, np.round(p[:, 1], 6))
    assert stored["auc"] == pytest.approx(d["auc"]) and stored["intervals"]["auc"]["method"] == "DeLong"
    assert stored["intervals"]["auc"]["low"] == pytest.approx(d["low"])
    assert stored["intervals"]["f1"]["method"].startswith("stratified bootstrap, percentile, 300 resamples")
    assert {"brier", "ece", "bins"} <= set(stored["calibration"]) and len(stored["per_class"]) == 2
    assert 0 < stored["youden"]["threshold"] < 1 and stored["collapse_warning"] is None
    for name in ("report.md", "roc.png", "confusion_matrix.png", "reliability.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "| AUC |" in report and "DeLong" in report and "Brier" in report
    assert result["num_cases"] == 40


def test_collapse_warning_is_logged_and_stored(tmp_path, caplog):
    cases, y, _ = _cases(10)
    p = np.tile([0.7, 0.3], (10, 1))
    ref, pred = _write_ref(tmp_path / "ref.csv", cases, y), _write_pred(tmp_path / "pred.csv", cases, p)
    with caplog.at_level(logging.WARNING):
        result = evaluate_classification(ref, pred, str(tmp_path / "eval"), n_resamples=50)
    assert "all 10 predictions fall in one class, 'neg'" in result["collapse_warning"]
    assert "recall 0 for class 'pos'" in caplog.text
    assert json.loads(Path(tmp_path / "eval" / "classification_metrics.json").read_text())["collapse_warning"]
    assert "WARNING: collapsed classifier" in (tmp_path / "eval" / "report.md").read_text()


def test_duplicated_prediction_row_is_refused_not_counted_twice(tmp_path):
    # the example: 4 reference cases, two rows repeated, AUC 0.75 became 0.917
    ref = _write_ref(tmp_path / "ref.csv", ["a", "b", "c", "d"], [0, 0, 1, 1])
    pred = tmp_path / "pred.csv"
    pred.write_text("case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nb,pos,0.3,0.7\nc,pos,0.4,0.6\n"
                    "d,pos,0.2,0.8\nc,pos,0.4,0.6\nd,pos,0.2,0.8\n")
    out = tmp_path / "eval"
    with pytest.raises(MVExtError, match="row 6: case 'c' appears again \\(first at row 4\\)"):
        evaluate_classification(ref, str(pred), str(out))
    assert not out.exists()


@pytest.mark.parametrize("ref_text, pred_text, message", [
    ("case_id,class\na,0\nb,1\n", "", "is empty"),
    ("case_id,class\na,0\nb,1\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nb,pos,x,0.7\n",
     "row 3, case 'b': p_neg = 'x' is not a probability"),
    ("case_id,class\na,0\nb,1\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nb,pos,0.3,NaN\n",
     "row 3, case 'b': p_pos = 'NaN'"),
    ("case_id,class\na,0\nb,1\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nz,pos,0.3,0.7\n",
     "1 case\\(s\\) that .* has no label for: z"),
    ("case_id,class\na,0\nb,1\nc,1\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nb,pos,0.3,0.7\n",
     "no prediction for: c. Pass --chill"),
    ("case_id,class\na,0\nb,2\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nb,pos,0.3,0.7\n",
     "case 'b' has class 2, out of range"),
    ("case_id,class\na,neg\nb,maybe\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\nb,pos,0.3,0.7\n",
     "case 'b' has class 'maybe'; allowed: 0..1 or neg, pos"),
    ("case_id,class\n", "case_id,predicted_class,p_neg,p_pos\na,neg,0.9,0.1\n", "no case rows"),
])
def test_bad_input_is_refused_before_any_output(tmp_path, ref_text, pred_text, message):
    (tmp_path / "ref.csv").write_text(ref_text)
    (tmp_path / "pred.csv").write_text(pred_text)
    _write_dataset_json(tmp_path)
    out = tmp_path / "eval"
    with pytest.raises(MVExtError, match=message):
        evaluate_classification(str(tmp_path / "ref.csv"), str(tmp_path / "pred.csv"), str(out))
    assert not out.exists()


def test_class_names_from_dataset_json_must_match(tmp_path):
    block = {"classification": {"class_names": {"0": "low", "1": "high"}, "labels": {"a": 0, "b": 1}}}
    (tmp_path / "dataset.json").write_text(json.dumps(block))
    pred = _write_pred(tmp_path / "pred.csv", ["a", "b"], np.array([[0.8, 0.2], [0.3, 0.7]]), dataset_json=False)
    with pytest.raises(MVExtError, match="Class names differ: .*dataset.json has \\['low', 'high'\\]"):
        evaluate_classification(str(tmp_path / "dataset.json"), pred, str(tmp_path / "eval"))
    assert not (tmp_path / "eval").exists()


def test_chill_scores_only_the_predicted_cases(tmp_path):
    cases, y, p = _cases(30)
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    keep = list(range(0, 30, 2))
    pred = _write_pred(tmp_path / "pred.csv", [cases[i] for i in keep], p[keep])
    with pytest.raises(MVExtError, match="Pass --chill"):
        evaluate_classification(ref, pred, str(tmp_path / "strict"))
    result = evaluate_classification(ref, pred, str(tmp_path / "chill"), chill=True, n_resamples=50)
    assert result["num_cases"] == 15
    assert result["reference_cases_not_predicted"] == [cases[i] for i in range(1, 30, 2)]
    assert result["auc"] == pytest.approx(delong_auc(y[keep], np.round(p[keep, 1], 6))["auc"])


def test_single_class_reference_reports_auc_undefined(tmp_path):
    cases, _, p = _cases(6)
    ref = _write_ref(tmp_path / "ref.csv", cases, [1] * 6)
    result = evaluate_classification(ref, _write_pred(tmp_path / "pred.csv", cases, p), str(tmp_path / "e"),
                                     n_resamples=50)
    assert result["auc"] is None and result["auc_note"] == "undefined: the reference holds only class 'pos'"
    assert result["specificity"] is None and result["accuracy"] is not None and "youden" not in result
    assert "n/a (undefined: the reference holds only class 'pos')" in (tmp_path / "e" / "report.md").read_text()


def test_cli_evaluate_cls_exit_codes(tmp_path, capsys):
    cases, y, p = _cases(20)
    ref, pred = _write_ref(tmp_path / "ref.csv", cases, y), _write_pred(tmp_path / "pred.csv", cases, p)
    assert main(["evaluate-cls", "-ref", ref, "-pred", pred, "-o", str(tmp_path / "e"), "--n-bootstrap", "50"]) == 0
    assert "| AUC |" in capsys.readouterr().out
    assert main(["evaluate-cls", "-pred", pred, "-o", str(tmp_path / "e2")]) == 2
    assert main(["evaluate-cls", "--cv", "-ref", ref, "-d", "1", "-c", "x", "-o", str(tmp_path / "e3")]) == 2


def test_compare_cls_pairs_every_model_with_the_baseline(tmp_path, capsys):
    cases, y, good = _cases(40, seed=1, noise=0.15)
    rng = np.random.default_rng(9)
    weak1 = np.clip(0.5 + rng.normal(0, 0.2, 40), 0.001, 0.999)
    weak = np.c_[1 - weak1, weak1]
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    a = _write_pred(tmp_path / "A" / "classification.csv", cases, good)
    order = np.random.default_rng(0).permutation(40)  # row order does not matter
    b = _write_pred(tmp_path / "B" / "classification.csv", [cases[i] for i in order], weak[order])
    with pytest.raises(MVExtError, match="is given twice"):
        compare_classifiers(ref, [a, b, a.replace("A/", "A/../A/")], str(tmp_path / "cmp"))
    assert main(["compare-cls", "-ref", ref, a, b, "-o", str(tmp_path / "cmp"), "--n-bootstrap", "300"]) == 0
    out = capsys.readouterr().out
    assert "Baseline: A/classification.csv" in out and "| AUC | B/classification.csv |" in out
    result = json.loads(Path(tmp_path / "cmp" / "comparison.json").read_text())
    t = delong_paired_test(y, np.round(weak1, 6), np.round(good[:, 1], 6))
    c = result["comparisons"]["B/classification.csv"]
    assert c["auc"]["method"] == "DeLong paired" and c["auc"]["p"] == pytest.approx(t["p"])
    assert c["auc"]["difference"] == pytest.approx(t["difference"]) and t["difference"] < 0
    assert c["accuracy"]["method"].startswith("paired stratified bootstrap")
    assert (tmp_path / "cmp" / "comparison.md").read_text().count("| AUC |") >= 2


def test_compare_cls_refuses_different_cases_and_classes(tmp_path):
    cases, y, p = _cases(10)
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    a = _write_pred(tmp_path / "a.csv", cases, p)
    b = _write_pred(tmp_path / "b.csv", cases[:-1], p[:-1])
    with pytest.raises(MVExtError, match=f"Only in {a}: {cases[-1]}"):
        compare_classifiers(ref, [a, b], str(tmp_path / "out"))
    c = _write_pred(tmp_path / "c.csv", cases, p, names=["neg", "other"])
    with pytest.raises(MVExtError, match="Class names differ"):
        compare_classifiers(ref, [a, c], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert model_labels(["x/fold_0/v/classification.csv", "y/fold_0/v/classification.csv"]) == \
        ["x/fold_0/v/classification.csv", "y/fold_0/v/classification.csv"]
    assert model_labels(["/r/a.csv", "/r/b.csv"]) == ["a.csv", "b.csv"]


def test_multiclass_comparison_uses_the_bootstrap_for_auc(tmp_path):
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], 10)
    cases = [f"c{i}" for i in range(30)]
    p = rng.dirichlet(np.ones(3), 30)
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    names = ["a", "b", "c"]
    a = _write_pred(tmp_path / "a.csv", cases, p, names)
    b = _write_pred(tmp_path / "b.csv", cases, np.roll(p, 1, axis=1), names)
    result = compare_classifiers(ref, [a, b], str(tmp_path / "out"), n_resamples=100)
    assert result["comparisons"]["b.csv"]["auc"]["method"].startswith("paired stratified bootstrap")
    models = result["models"]
    score = result["comparisons"]["b.csv"]["lld_mmri_score"]
    assert score["difference"] == pytest.approx(models["b.csv"]["lld_mmri_score"] - models["a.csv"]["lld_mmri_score"])
    assert score["low"] < score["high"]
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert md.count("| LLD-MMRI challenge score (F1 + kappa) / 2 |") == 2 + 2  # the paired table and each model's
    e = evaluate_classification(ref, a, str(tmp_path / "e"), n_resamples=100)
    assert e["intervals"]["lld_mmri_score"]["low"] <= e["lld_mmri_score"] <= e["intervals"]["lld_mmri_score"]["high"]
    assert "| LLD-MMRI challenge score" in (tmp_path / "e" / "report.md").read_text()


def test_a_stored_decision_threshold_in_the_csv_is_applied(tmp_path):
    cases = ["a", "b", "c", "d"]
    ref = _write_ref(tmp_path / "ref.csv", cases, [0, 0, 1, 1])
    rows = [("a", 0.9, 0.1), ("b", 0.6, 0.4), ("c", 0.65, 0.35), ("d", 0.2, 0.8)]
    _write_dataset_json(tmp_path)

    def write(name, rule_of):
        path = tmp_path / name
        path.write_text("case_id,predicted_class,p_neg,p_pos,roi,no_lesion_found,decision_rule\n" + "".join(
            f"{c},x,{n},{p},lesion,0,{rule_of(c)}\n" for c, n, p in rows))
        return str(path)

    argmax = evaluate_classification(ref, write("argmax.csv", lambda c: "argmax"), str(tmp_path / "e1"),
                                     n_resamples=20)
    assert argmax["sensitivity"] == 0.5 and argmax["definitions"]["prediction"] == "arg-max"
    thr = evaluate_classification(ref, write("thr.csv", lambda c: "p_pos >= 0.300000"), str(tmp_path / "e2"),
                                  n_resamples=20)
    # p_pos >= 0.3: b, c, d positive -> sensitivity 1, specificity 1/2; AUC does not change
    assert thr["sensitivity"] == 1.0 and thr["specificity"] == 0.5 and thr["auc"] == argmax["auc"]
    assert thr["definitions"]["prediction"] == "'pos' when p(pos) >= 0.300000"
    with pytest.raises(MVExtError, match="several rules: 'argmax' \\(row 2\\), 'p_pos >= 0.3' \\(row 3\\)"):
        evaluate_classification(ref, write("mixed.csv", lambda c: "argmax" if c == "a" else "p_pos >= 0.3"),
                                str(tmp_path / "e3"))
    with pytest.raises(MVExtError, match="decision_rule 'p_neg >= 0.3' is not understood"):
        evaluate_classification(ref, write("bad.csv", lambda c: "p_neg >= 0.3"), str(tmp_path / "e4"))


def test_cases_without_a_predicted_lesion_are_counted_and_scored_apart(tmp_path, caplog):
    """Cases pooled without a predicted lesion (the head never trained on the global mean): their number, and the
    metrics of the other cases beside those of all."""
    from nnunet_mvext.classification.metrics import classification_metrics

    cases, y, p = _cases(20, seed=4)
    p[[0, 1, 12]] = [[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]]  # confidently wrong where no lesion was found
    rois = ["none", "fallback"] + ["lesion"] * 10 + ["none"] + ["lesion"] * 7
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    pred = str(tmp_path / "pred.csv")
    write_case_predictions(pred, cases, p, NAMES, rois)
    _write_dataset_json(tmp_path)  # the integer reference is read through its class names
    with caplog.at_level(logging.INFO):
        r = evaluate_classification(ref, pred, str(tmp_path / "e"), n_resamples=100)
    local = r["lesion_localisation"]
    assert local["count"] == 3 and local["cases"] == ["case_000", "case_001", "case_012"]
    assert local["by_roi"] == {"fallback": 1, "none": 2}
    kept = [i for i, roi in enumerate(rois) if roi == "lesion"]
    only = classification_metrics(y[kept], np.round(p[kept], 6), NAMES)
    m = local["metrics_with_predicted_lesion_only"]
    assert m["num_cases"] == 17 and m["auc"] == pytest.approx(only["auc"]) and m["auc"] > r["auc"]
    assert m["intervals"]["auc"]["low"] is not None and r["num_cases"] == 20
    assert "WARNING: 3 of 20 cases had no predicted lesion" in caplog.text
    report = (tmp_path / "e" / "report.md").read_text()
    assert "## Cases without a predicted lesion" in report
    assert "Metrics of the 17 cases with a predicted lesion" in report
    # a CSV without the roi column (another tool's) is scored as before, without the section
    other = tmp_path / "other.csv"
    other.write_text("case_id,p_neg,p_pos\n" + "".join(f"{c},{a},{b}\n" for c, (a, b) in zip(cases, p)))
    assert evaluate_classification(ref, str(other), str(tmp_path / "e2"), n_resamples=20)["lesion_localisation"] is None


def _reordered_pred(path, cases, probs, names=NAMES):
    """The same predictions with the p_<class> columns in reverse order (``p_pos,p_neg``)."""
    path.write_text(f"case_id,predicted_class,p_{names[1]},p_{names[0]}\n" + "".join(
        f"{c},{names[int(p[1] >= p[0])]},{p[1]:.6f},{p[0]:.6f}\n" for c, p in zip(cases, probs)))
    return str(path)


@pytest.mark.parametrize("reference", ["integer", "named", "dataset.json"])
def test_probability_columns_are_matched_by_class_name_not_position(tmp_path, reference):
    cases, y = [f"case_{i:03d}" for i in range(10)], np.array([0, 1] * 5)
    p1 = np.where(y == 1, 0.8, 0.3)  # separates the classes perfectly: AUC 1, accuracy 1
    probs = np.c_[1 - p1, p1]
    (tmp_path / "usual").mkdir()
    (tmp_path / "reordered").mkdir()
    if reference == "dataset.json":
        ref = tmp_path / "ref.json"
        ref.write_text(json.dumps({"classification": {"class_names": {"0": "neg", "1": "pos"},
                                                      "labels": {c: int(v) for c, v in zip(cases, y)}}}))
        ref = str(ref)
    else:
        ref = _write_ref(tmp_path / "ref.csv", cases, [NAMES[v] for v in y] if reference == "named" else y)
    usual = _write_pred(tmp_path / "usual" / "classification.csv", cases, probs, dataset_json=reference == "integer")
    reordered = _reordered_pred(tmp_path / "reordered" / "classification.csv", cases, probs)
    if reference == "integer":  # beside the CSV, as predict-cls writes it
        _write_dataset_json(tmp_path / "reordered")
    a = evaluate_classification(ref, usual, str(tmp_path / "e_usual"), n_resamples=20)
    b = evaluate_classification(ref, reordered, str(tmp_path / "e_reordered"), n_resamples=20)
    assert a["auc"] == b["auc"] == 1.0 and a["accuracy"] == b["accuracy"] == 1.0
    assert b["collapse_warning"] is None
    if reference == "named":  # no dataset names: the classes are taken in the order of the file's columns
        assert b["class_names"] == ["pos", "neg"] and b["confusion_matrix"] == [[5, 0], [0, 5]]
    else:
        assert b["class_names"] == NAMES and b["confusion_matrix"] == a["confusion_matrix"]
    result = compare_classifiers(ref, [usual, reordered], str(tmp_path / "cmp"), n_resamples=20)
    assert result["comparisons"]["reordered/classification.csv"]["auc"]["difference"] == pytest.approx(0)


def test_integer_classes_without_class_names_are_refused_and_read_through_d(tmp_path, monkeypatch, capsys):
    cases, y = [f"case_{i:03d}" for i in range(10)], np.array([0, 1] * 5)
    probs = np.c_[np.where(y == 1, 0.2, 0.7), np.where(y == 1, 0.8, 0.3)]
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    pred = _reordered_pred(tmp_path / "classification.csv", cases, probs)  # no dataset.json beside it
    out = tmp_path / "eval"
    with pytest.raises(MVExtError, match="case 'case_000' has the integer class 0, and no class names are known .*"
                                         "Pass the dataset with -d"):
        evaluate_classification(ref, pred, str(out))
    with pytest.raises(MVExtError, match="no class names are known"):
        compare_classifiers(ref, [pred, _write_pred(tmp_path / "b.csv", cases, probs, dataset_json=False)],
                            str(out))
    assert not out.exists()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    raw = tmp_path / "nnUNet_raw" / "Dataset321_Names"
    raw.mkdir(parents=True)
    _write_dataset_json(raw)
    assert main(["evaluate-cls", "-ref", ref, "-pred", pred, "-d", "321", "-o", str(out), "--n-bootstrap", "20"]) == 0
    stored = json.loads(Path(out / "classification_metrics.json").read_text())
    assert stored["auc"] == 1.0 and stored["accuracy"] == 1.0 and stored["class_names"] == NAMES
    assert "Dataset321_Names" in stored["class_names_from"]


def test_class_names_that_really_differ_are_named(tmp_path):
    cases, y, p = _cases(10)
    ref = _write_ref(tmp_path / "ref.csv", cases, y)
    (tmp_path / "other").mkdir()
    other = _write_pred(tmp_path / "other" / "classification.csv", cases, p, names=["pos", "maybe"],
                        dataset_json=False)
    with pytest.raises(MVExtError, match="only in .*other/classification.csv \\(its p_<class> columns\\): 'maybe'; "
                                         "only in .*dataset.json: 'neg'"):
        compare_classifiers(ref, [_write_pred(tmp_path / "a.csv", cases, p), other], str(tmp_path / "cmp"))


@pytest.mark.parametrize("ref_encoding, pred_encoding", [("cp1252", "utf-16"), ("utf-16", "latin-1")])
def test_csvs_in_the_encodings_a_spreadsheet_saves_are_read(tmp_path, caplog, ref_encoding, pred_encoding):
    caplog.set_level("INFO")
    names = ["négatif", "positif"]
    cases, y, p = _cases(12)
    utf8 = _write_pred(tmp_path / "pred_utf8.csv", cases, p, names=names, dataset_json=False)
    ref = tmp_path / "ref.csv"
    ref.write_bytes(("case_id,class\r\n" + "".join(f"{c},{names[v]}\r\n" for c, v in zip(cases, y)))
                    .encode(ref_encoding))
    pred = tmp_path / "pred.csv"
    pred.write_bytes(Path(utf8).read_text(encoding="utf-8").encode(pred_encoding))
    expected = classification_metrics(y, np.round(p, 6), names)
    result = evaluate_classification(str(ref), str(pred), str(tmp_path / "e"), n_resamples=20)
    assert result["class_names"] == names and result["auc"] == expected["auc"]
    assert result["accuracy"] == expected["accuracy"]
    assert "as Windows-1252 (cp1252)" in caplog.text


def test_chill_scores_the_cases_present_in_both_when_the_predictions_hold_unlabelled_cases(tmp_path, caplog):
    """predict-cls over import-lld's imagesTs (labelled and unreleased cases) against labelsTs/classification.csv
    (the labelled ones), one labelled case not predicted: refused with a hint at --chill; with it the 14 cases in
    both are scored and the counts named."""
    caplog.set_level("INFO")
    cases, y, p = _cases(30)
    labelled = list(range(0, 30, 2))
    ref = _write_ref(tmp_path / "ref.csv", [cases[i] for i in labelled], y[labelled])
    predicted = list(range(1, 30))
    pred = _write_pred(tmp_path / "pred.csv", [cases[i] for i in predicted], p[predicted])
    with pytest.raises(MVExtError, match=r"holds 15 case\(s\) that .*ref.csv has no label for: .*; .*ref.csv holds 1 "
                                         r"case\(s\) that .*pred.csv has no prediction for: " + cases[0]
                                         + r"\. Pass --chill to score only the 14 case\(s\) present in both"):
        evaluate_classification(ref, pred, str(tmp_path / "strict"))
    assert not (tmp_path / "strict").exists()
    result = evaluate_classification(ref, pred, str(tmp_path / "chill"), chill=True, n_resamples=50)
    both = list(range(2, 30, 2))
    assert result["num_cases"] == 14
    assert result["predicted_cases_without_label"] == [cases[i] for i in range(1, 30, 2)]
    assert result["reference_cases_not_predicted"] == [cases[0]]
    assert result["auc"] == pytest.approx(delong_auc(y[both], np.round(p[both, 1], 6))["auc"])
    assert "--chill: scoring the 14 case(s) present in both; left out: 15 predicted case(s) without a label" \
        in caplog.text and "1 reference case(s) without a prediction" in caplog.text


def test_no_case_in_both_is_refused_even_with_chill(tmp_path):
    cases, y, p = _cases(8)
    ref = _write_ref(tmp_path / "ref.csv", cases[:4], y[:4])
    pred = _write_pred(tmp_path / "pred.csv", cases[4:], p[4:])
    with pytest.raises(MVExtError, match="No case of .*pred.csv has a label in .*ref.csv"):
        evaluate_classification(ref, pred, str(tmp_path / "e"), chill=True)
    assert not (tmp_path / "e").exists()
