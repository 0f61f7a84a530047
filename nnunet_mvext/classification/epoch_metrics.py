"""The per-epoch classification metric of the fusion trainers: defined for any number of classes.

Every validation case is classified once per epoch from one deterministic patch centred on its ground-truth lesion
(:meth:`~nnunet_mvext.trainers.fusion_trainers.nnUNetTrainerFusion.classification_validation`). From the case labels
``y`` (N,) and probabilities ``p`` (N, K):

- ``macro_auc``: the mean one-vs-rest ROC AUC over the classes present in ``y`` that also have negatives (the binary
  AUC for K = 2), scikit-learn's ``roc_auc_score``; None when no class qualifies (a single-class validation set);
- ``macro_f1``: scikit-learn's ``f1_score(average="macro")`` of the arg-max predictions over the classes present in
  ``y`` or in the predictions (absent classes are not averaged in as zeros);
- ``cohen_kappa``: scikit-learn's ``cohen_kappa_score`` of the arg-max predictions;
- ``classes_scored``: the classes the AUC averages over.

References: Hand & Till's one-vs-rest AUC averaging is what ``roc_auc_score(multi_class="ovr", average="macro")``
does when every class is present; here classes absent from ``y`` are left out instead of making the metric undefined.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score


def epoch_classification_metrics(labels, probabilities) -> dict[str, Optional[float]]:
    """``labels`` (N,) int, ``probabilities`` (N, K) -> the metrics of the module docstring."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=np.float64)
    if len(y) == 0:
        return {"macro_auc": None, "macro_f1": None, "cohen_kappa": None, "classes_scored": []}
    k = p.shape[1]
    scored = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
    if k == 2:
        scored = [1] if scored else []
    aucs = [roc_auc_score(y == c, p[:, c]) for c in scored]
    predicted = p.argmax(1)
    present = sorted(set(y.tolist()) | set(predicted.tolist()))
    kappa = cohen_kappa_score(y, predicted) if len(present) > 1 else None
    return {"macro_auc": float(np.mean(aucs)) if aucs else None,
            "macro_f1": float(f1_score(y, predicted, labels=present, average="macro", zero_division=0)),
            "cohen_kappa": None if kappa is None or np.isnan(kappa) else float(kappa),
            "classes_scored": scored}
