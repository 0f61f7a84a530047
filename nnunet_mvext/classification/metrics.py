"""Case-level classification metrics, calibration, the collapse check, the per-case CSV and the plots.

Definitions. Binary tasks: class 1 is the positive class; sensitivity = recall of class 1, specificity = recall of
class 0, F1 of class 1, AUC of p(class 1). More than two classes: AUC = one-vs-rest macro (the unweighted mean over
classes of the AUC of p(class c) for "c vs the rest"), sensitivity = macro recall (mean over the classes present in
the reference), specificity = macro one-vs-rest specificity, F1 = macro F1 over the classes present in the reference
or the predictions (scikit-learn's default labels, the LLD-MMRI 2023 challenge's metric; a class in neither has F1
0/0 and is named in ``f1_note``, not averaged as 0), and the LLD-MMRI challenge score, the challenge's ranking score
``(macro F1 + Cohen's kappa) / 2``. Cohen's kappa is unweighted. Predictions are the arg-max of the probabilities,
or for two classes given a ``threshold``: class 1 when ``p(class 1) >= threshold`` (:func:`predicted_classes`). A
metric whose definition divides by zero on the data (AUC with one class in the reference, sensitivity without
positive cases) is ``None`` and its ``<metric>_note`` says why; it is never reported as 0.

Point metrics come from scikit-learn; the intervals are in :mod:`nnunet_mvext.classification.statistics`.

References
----------
- G. W. Brier. Verification of forecasts expressed in terms of probability. Monthly Weather Review 78(1):1-3, 1950.
- C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. On calibration of modern neural networks. ICML 2017 (expected
  calibration error, reliability diagrams).
- LLD-MMRI 2023, the Liver Lesion Diagnosis challenge on multi-phase MRI (MICCAI 2023): ranking score = the mean of
  macro-F1 and Cohen's kappa (https://github.com/LMMMEng/LLD-MMRI2023).
- J. Cohen. A coefficient of agreement for nominal scales. Educ. Psychol. Meas. 20(1):37-46, 1960.
- W. J. Youden. Index for rating diagnostic tests. Cancer 3(1):32-35, 1950.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Optional, Sequence

import numpy as np
from sklearn import metrics as skm

from nnunet_mvext.csv_files import read_csv_rows
from nnunet_mvext.errors import MVExtError

DEFAULT_CALIBRATION_BINS = 10
LLD_MMRI_SCORE = "the LLD-MMRI 2023 challenge score: (macro F1 + Cohen's kappa) / 2"


def _names(indices: Sequence[int], class_names: Sequence[str]) -> str:
    return ", ".join(f"'{class_names[i]}'" for i in indices)


def per_class_recall_precision(y_true: Sequence[int], predicted: Sequence[int],
                               class_names: Sequence[str]) -> list[dict]:
    """One ``{"class", "support", "predicted", "recall", "precision"}`` per class.

    ``recall_c = TP_c / #{y = c}``, ``precision_c = TP_c / #{pred = c}``; a 0/0 is ``None`` (with ``recall_note`` /
    ``precision_note``), not 0.
    """
    y, pred = np.asarray(y_true, dtype=int), np.asarray(predicted, dtype=int)
    out = []
    for c, name in enumerate(class_names):
        tp, support, npred = int(((y == c) & (pred == c)).sum()), int((y == c).sum()), int((pred == c).sum())
        row = {"class": name, "support": support, "predicted": npred,
               "recall": tp / support if support else None, "precision": tp / npred if npred else None}
        if not support:
            row["recall_note"] = f"undefined (0/0): the reference holds no case of class '{name}'"
        if not npred:
            row["precision_note"] = f"undefined (0/0): no case is predicted as class '{name}'"
        out.append(row)
    return out


def collapse_warning(y_true: Sequence[int], predicted: Sequence[int], class_names: Sequence[str]) -> Optional[str]:
    """A warning when the classifier collapsed, else None.

    Fires when all predictions fall in one class, or when a class present in the reference has recall 0 (none of
    its cases is predicted as that class): a head that learned the majority class scores a fair accuracy and a
    macro-F1 near ``1 / K`` without anything else noticing.
    """
    y, pred = np.asarray(y_true, dtype=int), np.asarray(predicted, dtype=int)
    parts = []
    if len(pred) > 1 and len(np.unique(pred)) == 1 and len(class_names) > 1:
        parts.append(f"all {len(pred)} predictions fall in one class, '{class_names[int(pred[0])]}'")
    zero = [c for c in range(len(class_names)) if (y == c).any() and not ((y == c) & (pred == c)).any()]
    if zero:
        counts = ", ".join(f"'{class_names[c]}' ({int((y == c).sum())} cases)" for c in zero)
        parts.append(f"recall 0 for class{'es' if len(zero) > 1 else ''} {counts}: none of their cases is "
                     f"predicted as their class")
    if not parts:
        return None
    return "collapsed classifier: " + "; ".join(parts) + "."


def brier_score(y_true: Sequence[int], probabilities: np.ndarray) -> float:
    """Brier score. Binary: ``mean_i (p_i1 - [y_i = 1])^2`` (scikit-learn's ``brier_score_loss``, 0..1).
    More classes: Brier's original ``mean_i sum_c (p_ic - [y_i = c])^2`` (0..2). Lower is better.

    References
    ----------
    Brier, Monthly Weather Review 1950.
    """
    y, p = np.asarray(y_true, dtype=int), np.asarray(probabilities, dtype=float)
    if p.shape[1] == 2:
        return float(skm.brier_score_loss(y, p[:, 1], pos_label=1))
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def calibration_bins(y_true: Sequence[int], probabilities: np.ndarray,
                     n_bins: int = DEFAULT_CALIBRATION_BINS) -> list[dict]:
    """Equal-width confidence bins ``((b-1)/M, b/M]`` (the first also holds 0) of the top-label confidence
    ``max_c p_ic``: per bin ``{"lower", "upper", "count", "confidence" (mean), "accuracy" (fraction with
    arg-max = y)}``; empty bins have ``count`` 0 and None values."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(probabilities, dtype=float)
    conf, correct = p.max(1), (p.argmax(1) == y)
    idx = np.clip(np.ceil(np.round(conf * n_bins, 9)).astype(int) - 1, 0, n_bins - 1)  # 0.7 * 10 = 7.000...01
    out = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": n,
                    "confidence": float(conf[sel].mean()) if n else None,
                    "accuracy": float(correct[sel].mean()) if n else None})
    return out


def expected_calibration_error(y_true: Sequence[int], probabilities: np.ndarray,
                               n_bins: int = DEFAULT_CALIBRATION_BINS) -> float:
    """Expected calibration error (Guo et al. 2017, eq. 3) with M equal-width bins of the top-label confidence:

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``, bins as :func:`calibration_bins`. 0 is perfectly
    calibrated; the value depends on M (default 10, as Guo et al. use 15) and is biased upwards on few cases.

    References
    ----------
    Guo, Pleiss, Sun, Weinberger, On calibration of modern neural networks, ICML 2017.
    """
    bins = calibration_bins(y_true, probabilities, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def youden_threshold(y_true: Sequence[int], positive_scores: Sequence[float]) -> dict:
    """Threshold ``t`` on p(class 1) maximising Youden's ``J = sensitivity + specificity - 1`` over the ROC points
    (rule: positive when ``p >= t``; among equal J the highest t). Returns ``{"threshold", "youden_j",
    "sensitivity", "specificity"}``. Chosen on these cases, it is optimistic when applied to them again.

    References
    ----------
    Youden, Cancer 1950.
    """
    y = np.asarray(y_true, dtype=int)
    if len(np.unique(y)) < 2:
        raise MVExtError("A Youden threshold needs reference cases of both classes.")
    fpr, tpr, thresholds = skm.roc_curve(y, np.asarray(positive_scores, dtype=float), pos_label=1,
                                         drop_intermediate=False)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    best = int(np.argmax(j))
    return {"threshold": float(thresholds[best]), "youden_j": float(j[best]), "sensitivity": float(tpr[best]),
            "specificity": float(1 - fpr[best])}


def predicted_classes(probabilities: np.ndarray, threshold: Optional[float] = None) -> np.ndarray:
    """Arg-max ``(N, K) -> (N,)``; with ``threshold`` (two classes only): 1 where ``p_1 >= threshold``."""
    p = np.asarray(probabilities, dtype=float)
    if threshold is None:
        return p.argmax(-1)
    if p.shape[-1] != 2:
        raise MVExtError(f"A decision threshold needs two classes; got {p.shape[-1]}.")
    return (p[..., 1] >= threshold).astype(int)


def metric_definitions(class_names: Sequence[str], threshold: Optional[float] = None) -> dict:
    """What each metric means for this number of classes (stored with every result)."""
    if len(class_names) == 2:
        pos, neg = class_names[1], class_names[0]
        return {"positive_class": pos, "auc": f"AUC of p({pos})", "sensitivity": f"recall of '{pos}'",
                "specificity": f"recall of '{neg}'", "f1": f"F1 of '{pos}'", "cohen_kappa": "unweighted",
                "prediction": "arg-max" if threshold is None else f"'{pos}' when p({pos}) >= {threshold:.6f}",
                "brier": f"mean (p({pos}) - y)^2",
                "ece": "top-label, equal-width bins (Guo et al. 2017)"}
    return {"auc": "one-vs-rest, macro mean over classes", "sensitivity": "macro recall over the classes present",
            "specificity": "macro one-vs-rest specificity",
            "f1": "macro F1 over the classes present in the reference or the predictions",
            "cohen_kappa": "unweighted", "lld_mmri_score": LLD_MMRI_SCORE,
            "prediction": "arg-max", "brier": "mean over cases of sum over classes",
            "ece": "top-label, equal-width bins (Guo et al. 2017)"}


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                           calibration_bins_count: int = DEFAULT_CALIBRATION_BINS,
                           threshold: Optional[float] = None) -> dict:
    """Point metrics of arg-max predictions (definitions in the module docstring), per-class recall and precision,
    calibration (:func:`brier_score`, :func:`expected_calibration_error`) and :func:`collapse_warning`.

    Keys: ``num_cases, class_names, auc, accuracy, balanced_accuracy, sensitivity, specificity, f1, cohen_kappa,
    lld_mmri_score`` (more than two classes only), ``confusion_matrix`` (rows true, columns predicted),
    ``per_class``, ``calibration`` (``brier``, ``ece``, ``n_bins``, ``bins``), ``collapse_warning`` (None or the
    text), ``definitions`` and, for each metric that is None, ``<metric>_note``. ``threshold`` (binary):
    predictions by ``p_1 >= threshold`` instead of the arg-max (the calibration stays the top-label arg-max
    confidence).
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    k = len(class_names)
    pred = predicted_classes(p, threshold)
    labels = list(range(k))
    cm = skm.confusion_matrix(y, pred, labels=labels)
    present = [c for c in labels if (y == c).any()]
    absent = [c for c in labels if c not in present]
    notes = {}
    if len(present) == 1:
        single = f"the reference holds only class '{class_names[present[0]]}'"
    else:
        single = f"the reference holds no case of class {_names(absent, class_names)}"
    if absent:
        auc = None
        notes["auc_note"] = f"undefined: {single}"
    elif k == 2:
        auc = float(skm.roc_auc_score(y, p[:, 1]))
    else:
        auc = float(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in labels]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        balanced = float(skm.balanced_accuracy_score(y, pred))
        kappa = float(skm.cohen_kappa_score(y, pred, labels=labels))
    if not math.isfinite(kappa):
        kappa = None
        notes["cohen_kappa_note"] = "undefined: reference and predictions both hold a single, same class"
    if k == 2:
        sens = float(cm[1, 1] / cm[1].sum()) if cm[1].sum() else None
        spec = float(cm[0, 0] / cm[0].sum()) if cm[0].sum() else None
        f1 = float(skm.f1_score(y, pred, pos_label=1, zero_division=0))
        if sens is None:
            notes["sensitivity_note"] = f"undefined (0/0): the reference holds no case of class '{class_names[1]}'"
        if spec is None:
            notes["specificity_note"] = f"undefined (0/0): the reference holds no case of class '{class_names[0]}'"
    else:
        sens = float(skm.recall_score(y, pred, average="macro", labels=present, zero_division=0))
        if absent:
            notes["sensitivity_note"] = f"macro recall over the classes present; {single}"
        tn = [cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i] for i in labels]
        fp = [cm[:, i].sum() - cm[i, i] for i in labels]
        spec_values = [t / (t + f) for t, f in zip(tn, fp) if t + f]
        spec = float(np.mean(spec_values)) if spec_values else None
        if spec is None:
            notes["specificity_note"] = f"undefined (0/0): {single}"
        scored = sorted(set(y.tolist()) | set(pred.tolist()))
        f1 = float(skm.f1_score(y, pred, average="macro", labels=scored, zero_division=0))
        unscored = [c for c in labels if c not in scored]
        if unscored:
            notes["f1_note"] = (f"macro F1 over the {len(scored)} classes present in the reference or the predictions; "
                                f"class{'es' if len(unscored) > 1 else ''} {_names(unscored, class_names)} "
                                f"{'are' if len(unscored) > 1 else 'is'} in neither and left out")
    result = {"num_cases": int(len(y)), "class_names": list(class_names), "auc": auc,
              "accuracy": float(skm.accuracy_score(y, pred)), "balanced_accuracy": balanced,
              "sensitivity": sens, "specificity": spec, "f1": f1, "cohen_kappa": kappa,
              "confusion_matrix": cm.tolist(), "per_class": per_class_recall_precision(y, pred, class_names),
              "calibration": {"brier": brier_score(y, p),
                              "ece": expected_calibration_error(y, p, calibration_bins_count),
                              "n_bins": calibration_bins_count,
                              "bins": calibration_bins(y, p, calibration_bins_count)},
              "collapse_warning": collapse_warning(y, pred, class_names),
              "definitions": metric_definitions(class_names, threshold)}
    if k > 2:
        result["lld_mmri_score"] = None if kappa is None else (f1 + kappa) / 2
        if kappa is None:
            notes["lld_mmri_score_note"] = "undefined: Cohen's kappa is undefined"
    result.update(notes)
    return result


def _read_rows(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(row number, cells)`` of the non-blank rows; an absent or empty file is an error."""
    if not os.path.isfile(path):
        raise MVExtError(f"Predictions file {path} does not exist.")
    rows = read_csv_rows(path)
    if not rows or not any(c.strip() for c in rows[0]):
        raise MVExtError(f"{path} is empty; expected the header 'case_id,predicted_class,p_<class>...' and one row "
                         f"per case (as predict-cls writes it).")
    header = [c.strip() for c in rows[0]]
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if r and any(c.strip() for c in r)]
    return header, body


def read_predictions_csv(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """``(case_ids, class_names, probabilities)`` from a file written by
    :func:`~nnunet_mvext.classification.prediction_table.write_case_predictions`.

    Only columns whose header starts with ``p_`` are class probabilities (``p_<class name>``); other columns
    (``predicted_class``, ``no_lesion_found``, ``true_class``, ``beta_*``, ``aux_*``, ...) are ignored. Refused, naming
    the file and row: an empty file, a first column other than ``case_id``, no ``p_`` column, a class named twice,
    no case rows, a row with a missing cell, an empty or duplicated case id, and a probability that is not a finite
    number in [0, 1].
    """
    header, body = _read_rows(path)
    if header[0] != "case_id":
        raise MVExtError(f"{path}: the first column must be 'case_id', got '{header[0]}'.")
    prob_cols = [i for i, h in enumerate(header) if h.startswith("p_")]
    names = [header[i][2:] for i in prob_cols]
    if len(names) < 2:
        raise MVExtError(f"{path}: expected one 'p_<class>' column per class (at least two), found "
                         f"{[header[i] for i in prob_cols]}.")
    for name in names:
        if names.count(name) > 1 or not name:
            raise MVExtError(f"{path}: the probability column 'p_{name}' is empty or given twice; every class needs "
                             f"its own column.")
    if not body:
        raise MVExtError(f"{path} has a header but no case rows; expected one row per case.")
    cases, probs, first_row = [], [], {}
    for number, row in body:
        if len(row) < len(header):
            raise MVExtError(f"{path}, row {number}: expected {len(header)} columns ({','.join(header)}), "
                             f"got {len(row)}.")
        case = row[0].strip()
        if not case:
            raise MVExtError(f"{path}, row {number}: the case id is empty.")
        if case in first_row:
            raise MVExtError(f"{path}, row {number}: case '{case}' appears again (first at row {first_row[case]}); "
                             f"each case must appear once, or it is counted twice.")
        first_row[case] = number
        values = []
        for i in prob_cols:
            text = row[i].strip()
            try:
                v = float(text)
            except ValueError:
                v = float("nan")
            if not math.isfinite(v) or v < 0 or v > 1:
                raise MVExtError(f"{path}, row {number}, case '{case}': {header[i]} = '{text}' is not a "
                                 f"probability; allowed: a number in [0, 1].")
            values.append(v)
        cases.append(case)
        probs.append(values)
    return cases, names, np.array(probs, dtype=float)


def read_decision_threshold(path: str, class_names: Sequence[str]) -> Optional[float]:
    """The binary threshold that made ``predicted_class``, from the optional ``decision_rule`` column: None for
    ``argmax`` or no column, ``t`` for ``p_<class 1> >= t``; rows that disagree or another rule are refused by row."""
    header, body = _read_rows(path)
    if "decision_rule" not in header:
        return None
    col = header.index("decision_rule")
    rules = {}
    for number, row in body:
        rules.setdefault(row[col].strip() if len(row) > col else "", number)
    if len(rules) > 1:
        found = ", ".join(f"'{r}' (row {n})" for r, n in rules.items())
        raise MVExtError(f"{path}: the decision_rule column holds several rules: {found}; one file, one rule.")
    rule = next(iter(rules), "argmax")
    if rule == "argmax":
        return None
    prefix = f"p_{class_names[1]} >= " if len(class_names) == 2 else None
    try:
        if prefix is None or not rule.startswith(prefix):
            raise ValueError
        return float(rule[len(prefix):])
    except ValueError:
        allowed = "'argmax'" + (f" or '{prefix}<number>'" if prefix else " (more than two classes)")
        raise MVExtError(f"{path}, row {rules[rule]}: decision_rule '{rule}' is not understood; allowed: "
                         f"{allowed}.") from None


def read_column(path: str, name: str) -> Optional[dict[str, str]]:
    """``{case_id: cell}`` of the optional column ``name`` (None without the column; a missing cell is '')."""
    header, body = _read_rows(path)
    if name not in header:
        return None
    col = header.index(name)
    return {row[0].strip(): row[col].strip() if len(row) > col else "" for _, row in body}


def read_true_classes(path: str) -> Optional[dict[str, str]]:
    """``{case_id: class name}`` from the optional ``true_class`` column (None without the column)."""
    return read_column(path, "true_class")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    y = np.asarray(y_true)
    targets = [1] if len(class_names) == 2 else range(len(class_names))
    for c in targets:
        if len(np.unique(y == c)) < 2:
            continue
        fpr, tpr, _ = skm.roc_curve(y == c, probabilities[:, c])
        ax.plot(fpr, tpr, label=f"{class_names[c]} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str) -> None:
    plt = _pyplot()
    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4 + len(class_names) * 0.5, 4 + len(class_names) * 0.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tsne(embeddings: np.ndarray, labels: Sequence[int], class_names: Sequence[str], path: str) -> None:
    from sklearn.manifold import TSNE

    plt = _pyplot()
    n = len(embeddings)
    points = TSNE(n_components=2, perplexity=max(1.0, min(30.0, (n - 1) / 3)), init="random",
                  random_state=0).fit_transform(np.asarray(embeddings, dtype=float))
    fig, ax = plt.subplots(figsize=(5, 5))
    labels = np.asarray(labels)
    for c, name in enumerate(class_names):
        ax.scatter(points[labels == c, 0], points[labels == c, 1], label=name, s=15)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def auc_curve_figure(auc: Sequence[Optional[float]], ema: Sequence[Optional[float]]):
    """The figure of :func:`plot_auc_curve` (returned open, for tests)."""
    plt = _pyplot()
    with plt.rc_context({"font.size": 18}):
        fig, ax = plt.subplots(figsize=(30, 18))
        x = np.arange(len(auc))
        raw = np.array([np.nan if v is None else v for v in auc], dtype=float)
        smooth = np.array([np.nan if v is None else v for v in ema], dtype=float)
        ax.plot(x, raw, color="g", linestyle="dotted", linewidth=3, label="val macro AUC (validation cases)")
        ax.plot(x, smooth, color="g", linestyle="-", linewidth=4, label="val AUC (moving average)")
        if np.isfinite(smooth).any():
            best = int(np.nanargmax(smooth))
            ax.plot([best], [smooth[best]], "o", color="k", markersize=14,
                    label=f"best moving average {smooth[best]:.3f} (epoch {best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("AUC")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, max(len(auc) - 1, 1))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=3, frameon=False)
        fig.tight_layout()
    return fig


def plot_auc_curve(auc: Sequence[Optional[float]], ema: Sequence[Optional[float]], path: str) -> None:
    """Per-epoch validation-patch AUC and its moving average, written next to nnU-Net's ``progress.png`` as
    ``progress_classification.png``: the same scale (30 x 18 inches per panel, font size 18, thick lines) and the
    legend above the axes, so it never hides a curve; the best moving average is marked."""
    plt = _pyplot()
    fig = auc_curve_figure(auc, ema)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability_diagram(y_true: Sequence[int], probabilities: np.ndarray, path: str,
                             n_bins: int = DEFAULT_CALIBRATION_BINS, title: str = "") -> None:
    """Reliability diagram (Guo et al. 2017, fig. 1): per equal-width bin of the top-label confidence, the accuracy
    (bars) against the diagonal of perfect calibration; below, the number of cases per bin. The ECE is in the
    title."""
    plt = _pyplot()
    bins = calibration_bins(y_true, probabilities, n_bins)
    ece = expected_calibration_error(y_true, probabilities, n_bins)
    with plt.rc_context({"font.size": 14}):
        fig, (ax, axn) = plt.subplots(2, 1, figsize=(8, 10), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
        centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
        width = 1.0 / n_bins
        ax.bar(centres, [b["accuracy"] or 0 for b in bins], width=width * 0.95, color="tab:blue",
               edgecolor="k", label="accuracy in bin")
        ax.plot([b["confidence"] for b in bins if b["count"]], [b["accuracy"] for b in bins if b["count"]], "o",
                color="tab:red", label="(mean confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.set_ylabel("accuracy (arg-max = reference)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{title + ': ' if title else ''}ECE {ece:.3f} ({n_bins} bins, {sum(b['count'] for b in bins)} "
                     f"cases)")
        ax.legend(loc="upper left")
        axn.bar(centres, [b["count"] for b in bins], width=width * 0.95, color="gray", edgecolor="k")
        axn.set_xlabel("confidence (largest class probability)")
        axn.set_ylabel("cases")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
