"""Case-level classification metrics, the per-case CSV and the plots (ROC, confusion matrix, t-SNE).

Binary tasks: class 1 is the positive class (sensitivity = recall of class 1, specificity = recall of class 0, F1 of
class 1, AUC of p(class 1)). More than two classes: AUC one-vs-rest macro, sensitivity = macro recall,
specificity = macro one-vs-rest specificity, F1 macro.
"""

from __future__ import annotations

import csv
from typing import Optional, Sequence

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str]) -> dict:
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    k = len(class_names)
    pred = p.argmax(1)
    cm = skm.confusion_matrix(y, pred, labels=list(range(k)))
    present = len(np.unique(y)) > 1
    if k == 2:
        auc = float(skm.roc_auc_score(y, p[:, 1])) if present else None
        sens = float(cm[1, 1] / max(cm[1].sum(), 1))
        spec = float(cm[0, 0] / max(cm[0].sum(), 1))
        f1 = float(skm.f1_score(y, pred, pos_label=1, zero_division=0))
    else:
        auc = float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(k)))) \
            if len(np.unique(y)) == k else None
        sens = float(skm.recall_score(y, pred, average="macro", labels=list(range(k)), zero_division=0))
        tn = [cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i] for i in range(k)]
        fp = [cm[:, i].sum() - cm[i, i] for i in range(k)]
        spec = float(np.mean([t / max(t + f, 1) for t, f in zip(tn, fp)]))
        f1 = float(skm.f1_score(y, pred, average="macro", labels=list(range(k)), zero_division=0))
    return {"num_cases": int(len(y)), "class_names": list(class_names), "auc": auc,
            "accuracy": float(skm.accuracy_score(y, pred)),
            "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if present else None,
            "sensitivity": sens, "specificity": spec, "f1": f1,
            "cohen_kappa": float(skm.cohen_kappa_score(y, pred)) if present else None,
            "confusion_matrix": cm.tolist()}


def write_predictions_csv(path: str, case_ids: Sequence[str], probabilities: np.ndarray,
                          class_names: Sequence[str], lesion_found: Sequence[bool],
                          y_true: Optional[Sequence[int]] = None) -> None:
    """Header, then ``case_id, predicted_class, p_<name>..., no_lesion_found[, true_class]`` per case."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["case_id", "predicted_class"] + [f"p_{n}" for n in class_names] + ["no_lesion_found"]
        writer.writerow(header + (["true_class"] if y_true is not None else []))
        for i, case in enumerate(case_ids):
            row = [case, class_names[int(np.argmax(probabilities[i]))]] + \
                  [f"{v:.6f}" for v in probabilities[i]] + [int(not lesion_found[i])]
            writer.writerow(row + ([class_names[int(y_true[i])]] if y_true is not None else []))


def read_predictions_csv(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """``(case_ids, class_names, probabilities)`` from a file written by :func:`write_predictions_csv`."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    prob_cols = [i for i, h in enumerate(header) if h.startswith("p_")]
    names = [header[i][2:] for i in prob_cols]
    cases = [r[0] for r in rows[1:] if r]
    probs = np.array([[float(r[i]) for i in prob_cols] for r in rows[1:] if r])
    return cases, names, probs


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


def plot_auc_curve(auc: Sequence[float], ema: Sequence[float], path: str) -> None:
    """Per-epoch validation AUC and its moving average (next to nnU-Net's progress.png)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(auc))
    ax.plot(x, [np.nan if v is None else v for v in auc], "g:", label="val AUC (patches)")
    ax.plot(x, [np.nan if v is None else v for v in ema], "g-", label="val AUC (mov. avg.)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
