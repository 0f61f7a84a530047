"""Metric definitions on a hand-computed fixture, undefined metrics, calibration, collapse, the CSV reader, plots."""

import numpy as np
import pytest
from sklearn import metrics as skm

from nnunet_mvext.classification.metrics import (
    auc_curve_figure,
    brier_score,
    calibration_bins,
    classification_metrics,
    collapse_warning,
    expected_calibration_error,
    plot_auc_curve,
    plot_reliability_diagram,
    read_predictions_csv,
    youden_threshold,
)
from nnunet_mvext.classification.prediction_table import write_case_predictions
from nnunet_mvext.errors import MVExtError

# Three classes, 8 cases. Arg-max confusion matrix (rows true) [[2, 1, 1], [1, 1, 0], [0, 0, 2]].
Y3 = [0, 0, 0, 0, 1, 1, 2, 2]
P3 = np.array([[.6, .3, .1], [.5, .2, .3], [.2, .5, .3], [.4, .1, .5],
               [.3, .6, .1], [.5, .4, .1], [.1, .2, .7], [.2, .3, .5]])


def test_multiclass_definitions_by_hand():
    m = classification_metrics(Y3, P3, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 1, 0], [0, 0, 2]]
    # one-vs-rest AUC by counting pairs (ties 1/2): a 12/16, b 11/12, c 11.5/12; macro mean 0.875
    # (prevalence-weighted 0.84375; one-vs-one differs too)
    assert m["auc"] == pytest.approx((12 / 16 + 11 / 12 + 11.5 / 12) / 3) == 0.875
    assert skm.roc_auc_score(Y3, P3, multi_class="ovr", average="weighted") == pytest.approx(0.84375)
    assert skm.roc_auc_score(Y3, P3, multi_class="ovo") != pytest.approx(0.875)
    # macro recall (1/2 + 1/2 + 1) / 3 = 2/3; micro and weighted recall are the accuracy 5/8
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(5 / 8)
    # unweighted kappa: p_o = 5/8, p_e = (4*3 + 2*2 + 2*3) / 64 = 11/32 -> (5/8 - 11/32) / (21/32) = 3/7
    assert m["cohen_kappa"] == pytest.approx(3 / 7)
    assert skm.cohen_kappa_score(Y3, P3.argmax(1), weights="linear") != pytest.approx(3 / 7)
    assert skm.cohen_kappa_score(Y3, P3.argmax(1), weights="quadratic") != pytest.approx(3 / 7)
    # one-vs-rest specificity 3/4, 5/6, 5/6; macro F1 (4/7 + 1/2 + 4/5) / 3
    assert m["specificity"] == pytest.approx(29 / 36)
    assert m["f1"] == pytest.approx((4 / 7 + 1 / 2 + 4 / 5) / 3)
    # LLD-MMRI 2023's ranking score: the mean of macro F1 and kappa
    assert m["lld_mmri_score"] == pytest.approx(((4 / 7 + 1 / 2 + 4 / 5) / 3 + 3 / 7) / 2)
    assert "LLD-MMRI" in m["definitions"]["lld_mmri_score"]
    assert [(r["recall"], r["precision"]) for r in m["per_class"]] == \
        [pytest.approx((0.5, 2 / 3)), pytest.approx((0.5, 0.5)), pytest.approx((1.0, 2 / 3))]
    assert m["collapse_warning"] is None


def test_binary_metrics():
    y = [0, 0, 1, 1, 1]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    m = classification_metrics(y, p, ["neg", "pos"])
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.6) and m["auc"] == pytest.approx(5 / 6)
    assert m["definitions"]["positive_class"] == "pos"
    assert "lld_mmri_score" not in m  # a multi-class score


def test_single_class_reference_reports_undefined_metrics_as_null_with_a_note():
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2]])
    m = classification_metrics([0, 0, 0], p, ["neg", "pos"])
    assert m["auc"] is None and m["auc_note"] == "undefined: the reference holds only class 'neg'"
    assert m["sensitivity"] is None and "'pos'" in m["sensitivity_note"]
    assert m["specificity"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_class"][1]["recall"] is None and "recall_note" in m["per_class"][1]
    m3 = classification_metrics([0, 1, 1], P3[[0, 4, 5]], ["a", "b", "c"])
    assert m3["auc"] is None and "'c'" in m3["auc_note"]
    assert m3["sensitivity"] == pytest.approx((1 + 0.5) / 2)  # over the classes present


def test_macro_f1_leaves_out_a_class_absent_from_reference_and_predictions():
    """A perfect classifier on a fold without class 'c': macro F1 1.0 (as accuracy and kappa), scikit-learn's
    default labels and LLD-MMRI's metric, not (1 + 1 + 0) / 3; the note names 'c'."""
    y = [0, 0, 1, 1, 1]
    p = np.array([[.8, .1, .1], [.7, .2, .1], [.1, .8, .1], [.2, .7, .1], [.3, .6, .1]])
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["f1"] == 1.0 == skm.f1_score(y, p.argmax(1), average="macro")
    assert m["accuracy"] == m["cohen_kappa"] == 1.0
    assert "'c' is in neither" in m["f1_note"]
    # a class predicted but absent from the reference counts (F1 0): scikit-learn's default labels
    wrong = classification_metrics(y, np.array([[.1, .1, .8]] + p[1:].tolist()), ["a", "b", "c"])
    assert wrong["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3) and "f1_note" not in wrong
    assert "f1_note" not in classification_metrics(Y3, P3, ["a", "b", "c"])


def test_collapse_warning():
    names = ["a", "b", "c"]
    assert collapse_warning([0, 1, 2, 2], [0, 1, 2, 0], names) is None
    all_one = collapse_warning([0, 1, 2, 2], [1, 1, 1, 1], names)
    assert "all 4 predictions fall in one class, 'b'" in all_one and "'a' (1 cases), 'c' (2 cases)" in all_one
    assert "recall 0 for class 'c' (2 cases)" in collapse_warning([0, 1, 2, 2], [0, 1, 0, 1], names)
    m = classification_metrics([0, 0, 1, 1], np.array([[.6, .4]] * 4), ["neg", "pos"])
    assert m["collapse_warning"].startswith("collapsed classifier: all 4 predictions fall in one class, 'neg'")


def test_calibration_by_hand():
    y = [0, 1, 1, 0]
    p1 = np.array([0.2, 0.7, 0.4, 0.9])
    p = np.c_[1 - p1, p1]
    assert brier_score(y, p) == pytest.approx((0.04 + 0.09 + 0.36 + 0.81) / 4)
    # confidences 0.8 (right), 0.7 (right), 0.6 (wrong), 0.9 (wrong), one per bin:
    # ECE = (0.2 + 0.3 + 0.6 + 0.9) / 4
    assert expected_calibration_error(y, p) == pytest.approx(0.5)
    bins = calibration_bins(y, p)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]  # 0.7 lands in (0.6, 0.7]
    assert brier_score([0, 2], np.array([[.6, .3, .1], [.2, .3, .5]])) == pytest.approx((0.26 + 0.38) / 2)
    assert expected_calibration_error([1, 1], np.array([[0.0, 1.0], [0.0, 1.0]])) == 0.0


def test_youden_threshold():
    # thresholds p >= t: t = 0.6 gives sensitivity 2/3, specificity 1 (J = 2/3), the best
    t = youden_threshold([0, 0, 1, 1, 1], [0.1, 0.5, 0.6, 0.9, 0.3])
    assert t == pytest.approx({"threshold": 0.6, "youden_j": 2 / 3, "sensitivity": 2 / 3, "specificity": 1.0})
    with pytest.raises(MVExtError, match="both classes"):
        youden_threshold([1, 1], [0.2, 0.3])


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_read_predictions_csv_reads_only_p_columns(tmp_path):
    path = str(tmp_path / "c.csv")
    write_case_predictions(path, ["x", "y"], np.array([[0.25, 0.75], [0.5, 0.5]]), ["neg", "pos"],
                           ["lesion", "none"], y_true=[1, 0])
    assert read_predictions_csv(path)[:2] == (["x", "y"], ["neg", "pos"])
    extra = _write(tmp_path / "e.csv", "case_id,predicted_class,p_neg,p_pos,no_lesion_found,beta_art,"
                                       "aux_art_p_neg,aux_art_p_pos,decision_rule\nx,pos,0.2,0.8,0,0.5,0.9,0.1,argmax\n")
    cases, names, probs = read_predictions_csv(extra)
    assert names == ["neg", "pos"] and probs.tolist() == [[0.2, 0.8]]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("case_id,predicted_class,p_a,p_b\n", "no case rows"),
    ("case_id,predicted_class,p_a,p_b\nc1,a,0.6,0.4\nc2,b,0.1,0.9\nc1,a,0.6,0.4\n",
     "row 4: case 'c1' appears again \\(first at row 2\\)"),
    ("case_id,predicted_class,p_a,p_b\nc1,a,0.6,0.4\nc2,b,nan,0.9\n", "row 3, case 'c2': p_a = 'nan'"),
    ("case_id,predicted_class,p_a,p_b\nc1,a,high,0.4\n", "row 2, case 'c1': p_a = 'high' is not a probability"),
    ("case_id,predicted_class,p_a,p_b\nc1,a,1.5,0.4\n", "allowed: a number in \\[0, 1\\]"),
    ("case_id,predicted_class,p_a,p_b\nc1,a,0.5\n", "row 2: expected 4 columns"),
    ("case,p_a,p_b\nc1,0.5,0.5\n", "first column must be 'case_id'"),
    ("case_id,p_a,p_a\nc1,0.5,0.5\n", "'p_a' is empty or given twice"),
])
def test_read_predictions_csv_refuses_bad_input(tmp_path, text, message):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(MVExtError, match=message) as e:
        read_predictions_csv(path)
    assert path in str(e.value)


def test_progress_plot_is_large_with_the_legend_outside_the_axes(tmp_path):
    auc = [0.5, 0.6, None, 0.8, 0.75]
    ema = [0.5, 0.55, 0.55, 0.65, 0.7]
    fig = auc_curve_figure(auc, ema)
    assert tuple(fig.get_size_inches()) == (30, 18)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert not legend.overlaps(axes_box) and legend.y0 >= axes_box.y1  # above the axes, not over a curve
    assert ax.get_legend().get_texts()[0].get_fontsize() >= 18
    path = tmp_path / "progress_classification.png"
    plot_auc_curve(auc, ema, str(path))
    assert path.stat().st_size > 10_000
    plot_reliability_diagram(Y3, P3, str(tmp_path / "reliability.png"))
    assert (tmp_path / "reliability.png").is_file()
