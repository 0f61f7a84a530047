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

**Moving average and checkpoint selection.** ``checkpoint_best_auc.pth`` keeps the epoch with the best moving average
of the macro AUC (:func:`auc_moving_average`): an exponential moving average with decay ``d`` = 0.9 (a time constant
of ``1 / (1 - d)`` = 10 epochs) and Adam's bias correction, so that it is a weighted mean of the AUCs so far,

    m_t = sum_{i <= t} d^(t - i) a_i / sum_{i <= t} d^(t - i)      (epochs without an AUC left out)

and it is selected only from epoch :func:`auc_selection_start` on (the 10th epoch, or the last of a shorter
training). The release before started the average at epoch 0's AUC with full weight and selected from epoch 0, so one
lucky AUC of an untrained network (a few validation cases) could pin the checkpoint to epoch 0; now epoch 0 weighs
``d^9 / sum_{k<10} d^k`` = 6 % of the first selectable average.

References: Hand & Till's one-vs-rest AUC averaging is what ``roc_auc_score(multi_class="ovr", average="macro")``
does when every class is present; here classes absent from ``y`` are left out instead of making the metric undefined.
Kingma & Ba, "Adam: a method for stochastic optimization", ICLR 2015, section 3 (bias correction of a moving average
started at zero).
"""

from __future__ import annotations

from typing import Optional, Sequence

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


#: decay of the AUC's moving average (time constant 1 / (1 - d) = 10 epochs)
AUC_EMA_DECAY = 0.9


def auc_moving_average(aucs: Sequence[Optional[float]], decay: float = AUC_EMA_DECAY) -> Optional[float]:
    """The bias-corrected moving average ``m_t`` (module docstring) of the per-epoch macro AUCs ``aucs`` (epoch 0
    first, the current epoch last); None when no epoch has one. An epoch without an AUC (None) is left out and the
    exponents count the epochs that have one: ``d^(n - 1 - j)`` for the j-th of the n AUCs, which equals the module
    docstring's ``d^(t - i)`` whenever every epoch has an AUC."""
    values = [float(a) for a in aucs if a is not None]
    if not values:
        return None
    weights = decay ** np.arange(len(values) - 1, -1, -1, dtype=np.float64)       # d^(t - i), oldest first
    return float(np.dot(weights, values) / weights.sum())


def auc_selection_start(num_epochs: int, decay: float = AUC_EMA_DECAY) -> int:
    """The first epoch (0-based) at which ``checkpoint_best_auc.pth`` may be selected: once the moving average spans
    its time constant (epoch 9 for d = 0.9), or the last epoch of a shorter training."""
    return max(0, min(int(round(1 / (1 - decay))), int(num_epochs)) - 1)
