"""Confidence intervals and paired tests for case-classification metrics.

- :func:`delong_auc`, :func:`delong_paired_test`: DeLong's variance of a binary AUC and of the difference of two
  correlated AUCs (same cases), computed with the O(n log n) midrank algorithm of Sun & Xu.
- :func:`bootstrap_intervals`, :func:`paired_bootstrap`: seeded stratified percentile bootstrap for every metric of
  :data:`BOOTSTRAP_METRICS`, one model or the difference of two models on the same resamples.
- :func:`newcombe_auc_interval`, :func:`boundary_auc_interval`: Newcombe's score interval for an AUC of exactly 0 or 1,
  where DeLong's variance is 0 and every bootstrap resample repeats the point value (an interval of zero width).
- :func:`metrics_with_intervals`: :func:`~nnunet_mvext.classification.metrics.classification_metrics` plus a 95 %
  interval per metric (DeLong for a binary AUC, Newcombe's score interval for an AUC of 0 or 1, the bootstrap for the
  rest): what evaluate-cls, the cross-validation report and compare-cls print.

Definitions (the same as :mod:`nnunet_mvext.classification.metrics`): class 1 is the positive class of a binary task;
with more than two classes AUC is the one-vs-rest macro mean, sensitivity the macro recall, specificity the macro
one-vs-rest specificity, F1 the macro F1 over the classes present in the reference or the predictions (of each
resample), kappa Cohen's unweighted kappa; more than two classes also the LLD-MMRI challenge score
``(macro F1 + kappa) / 2``.

The resampled metrics are computed here, vectorised over the resamples, from the confusion matrices and midranks
instead of calling scikit-learn once per resample: scikit-learn's seven metric functions take about 14 ms per
resample of 200 cases on our 2-core machine, 30 s for the default 2000 resamples of one model; the vectorised form
takes well under a second. ``tests/classification/test_statistics.py`` checks that it equals scikit-learn's
functions (and :func:`classification_metrics`) on random data with ties and absent predicted classes.

References
----------
- E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson. Comparing the areas under two or more correlated receiver operating
  characteristic curves: a nonparametric approach. Biometrics 44(3):837-845, 1988.
- X. Sun, W. Xu. Fast implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
  characteristic curves. IEEE Signal Processing Letters 21(11):1389-1393, 2014.
- R. G. Newcombe. Confidence intervals for an effect size measure based on the Mann-Whitney statistic. Part 2:
  Asymptotic methods and evaluation. Statistics in Medicine 25(4):559-573, 2006 (method 5).
- J. A. Hanley, B. J. McNeil. The meaning and use of the area under a receiver operating characteristic (ROC) curve.
  Radiology 143(1):29-36, 1982.
- B. Efron, R. J. Tibshirani. An Introduction to the Bootstrap. Chapman & Hall, 1993 (percentile interval, ch. 13;
  achieved significance level, ch. 15-16).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import optimize, stats

from nnunet_mvext.classification.metrics import classification_metrics, predicted_classes
from nnunet_mvext.errors import MVExtError

BOOTSTRAP_METRICS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "f1", "cohen_kappa")
#: reported for more than two classes only: the LLD-MMRI 2023 challenge score, (macro F1 + Cohen's kappa) / 2
MULTICLASS_METRICS = ("lld_mmri_score",)
DEFAULT_RESAMPLES = 2000
_CHUNK_ELEMENTS = 2_000_000  # resamples x cases held in memory at once


def metric_names(num_classes: int) -> tuple[str, ...]:
    """The metrics reported (with intervals) for a task of ``num_classes`` classes, in table order."""
    return BOOTSTRAP_METRICS + (MULTICLASS_METRICS if num_classes > 2 else ())


# ---------------------------------------------------------------------------------------------------------- DeLong
def _structural_components(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(aucs (K,), V10 (K, m), V01 (K, n))`` for K score rows (K, N) and m positives, n negatives.

    With midranks (ties count 1/2): ``T_Z`` over all cases, ``T_X`` over the positives, ``T_Y`` over the negatives,
    ``AUC = (sum_i T_Z(X_i) - m(m+1)/2) / (m n)``, ``V10_i = (T_Z(X_i) - T_X(X_i)) / n`` (the fraction of negatives
    below positive i) and ``V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m`` (the fraction of positives above negative j)
    (Sun & Xu 2014, eq. 9-12).
    """
    pos, neg = y_true == 1, y_true == 0
    m, n = int(pos.sum()), int(neg.sum())
    tz = stats.rankdata(scores, axis=1)
    tx = stats.rankdata(scores[:, pos], axis=1)
    ty = stats.rankdata(scores[:, neg], axis=1)
    aucs = (tz[:, pos].sum(1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, neg] - ty) / m
    return aucs, v10, v01


def delong_covariance(y_true: Sequence[int], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(aucs (K,), S (K, K))``: AUCs of K score vectors (K, N) on the same cases and DeLong's covariance.

    ``S = S10 / m + S01 / n`` with ``S10``, ``S01`` the sample covariances (denominator m-1, n-1) of the structural
    components V10 (over the m positives) and V01 (over the n negatives) (DeLong et al. 1988, eq. 5).
    Needs at least two cases of each class.
    """
    y = np.asarray(y_true, dtype=int)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2 or m + n != len(y):
        raise MVExtError(f"DeLong's variance needs binary labels 0/1 with at least two cases of each class; "
                         f"got {m} of class 1 and {n} of class 0 (and {len(y) - m - n} others).")
    aucs, v10, v01 = _structural_components(y, s)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_auc(y_true: Sequence[int], scores: Sequence[float], confidence: float = 0.95) -> dict:
    """Binary AUC of ``scores`` (p(class 1)), DeLong's variance and the interval ``AUC ± z·SE`` clipped to [0, 1].

    Returns ``{"auc", "variance", "se", "low", "high", "method"}``. As pROC's ``ci.auc(method="delong")``.

    References
    ----------
    DeLong, DeLong, Clarke-Pearson, Biometrics 1988; Sun & Xu, IEEE SPL 2014.
    """
    aucs, cov = delong_covariance(y_true, np.asarray(scores, dtype=float)[None])
    auc, var = float(aucs[0]), float(cov[0, 0])
    z = stats.norm.ppf(0.5 + confidence / 2)
    se = float(np.sqrt(max(var, 0.0)))
    return {"auc": auc, "variance": var, "se": se, "low": max(0.0, auc - z * se), "high": min(1.0, auc + z * se),
            "method": "DeLong"}


def delong_paired_test(y_true: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float],
                       confidence: float = 0.95) -> dict:
    """DeLong's test of ``AUC_a = AUC_b`` for two models scored on the same cases.

    ``d = AUC_a - AUC_b``, ``Var(d) = S_aa + S_bb - 2 S_ab`` (DeLong covariance), ``z = d / sqrt(Var(d))``, two-sided
    ``p = 2 (1 - Phi(|z|))``, interval ``d ± z_(1+c)/2 · sqrt(Var(d))``. Identical scores (Var(d) = 0) give
    ``z = None``, ``p = 1`` (``p = None`` if the AUCs still differ).

    Returns ``{"auc_a", "auc_b", "difference", "variance", "z", "p", "low", "high", "method"}``.

    References
    ----------
    DeLong, DeLong, Clarke-Pearson, Biometrics 1988; Sun & Xu, IEEE SPL 2014.
    """
    aucs, cov = delong_covariance(y_true, np.stack([np.asarray(scores_a, float), np.asarray(scores_b, float)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    zc = stats.norm.ppf(0.5 + confidence / 2)
    if var <= 1e-15:
        z, p, half = None, 1.0 if abs(diff) < 1e-12 else None, 0.0
    else:
        z = diff / np.sqrt(var)
        p, half = float(2 * stats.norm.sf(abs(z))), zc * np.sqrt(var)
        z = float(z)
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": diff, "variance": var, "z": z, "p": p,
            "low": diff - half, "high": diff + half, "method": "DeLong paired"}


# ------------------------------------------------------------------------------------------- AUC of exactly 0 or 1
def newcombe_auc_interval(auc: float, m: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's score interval (2006, method 5) of a Mann-Whitney AUC ``A`` from m positives and n negatives.

    The Hanley-McNeil variance with the exponential-model approximations ``Q1 = t / (2 - t)``, ``Q2 = 2 t^2 / (1 + t)``
    and both sample sizes replaced by ``h = (m + n) / 2 - 1``, written as a function of the true AUC ``t``::

        V(t) = t (1 - t) [2 + h + (1 + 2 h) t (1 - t)] / (m n (2 - t) (1 + t))

    is inverted as Wilson's interval inverts the binomial variance: the bounds are the two solutions ``t`` of
    ``(A - t)^2 = z^2 V(t)`` (one below ``A``, one above; ``z`` the normal quantile of the level). Unlike a Wald
    interval (DeLong, or Hanley-McNeil at ``t = A``) it does not collapse at ``A = 1`` (or 0): there the bounds are
    ``[L, 1]`` with ``L < 1`` the root of ``(1 - t) m n (2 - t)(1 + t) = z^2 t [2 + h + (1 + 2 h) t (1 - t)]``. Newcombe
    recommends it for its coverage near the boundary. Reproduces the ``NAP`` interval of the R package SingleCaseES.

    References
    ----------
    Newcombe, Statistics in Medicine 2006 (method 5); Hanley & McNeil, Radiology 1982.
    """
    if m < 1 or n < 1:
        raise MVExtError(f"An AUC needs at least one case of each class; got {m} positive and {n} negative cases.")
    z2 = stats.norm.ppf(0.5 + confidence / 2) ** 2
    h = (m + n) / 2 - 1

    def spread(t: float) -> float:  # z^2 V(t) m n (2 - t)(1 + t) / (t (1 - t))
        return z2 * (2 + h + (1 + 2 * h) * t * (1 - t))

    def score(t: float) -> float:  # m n (A - t)^2 (2 - t)(1 + t) - z^2 V(t) m n (2 - t)(1 + t)
        return m * n * (auc - t) ** 2 * (2 - t) * (1 + t) - t * (1 - t) * spread(t)

    # at A = 1 (A = 0) the trivial root t = A is divided out, leaving one sign change on [0, 1]
    if auc >= 1:
        low = optimize.brentq(lambda t: (1 - t) * m * n * (2 - t) * (1 + t) - t * spread(t), 0.0, 1.0, xtol=1e-14)
    else:
        low = 0.0 if auc <= 0 else optimize.brentq(score, 0.0, auc, xtol=1e-14)
    if auc <= 0:
        high = optimize.brentq(lambda t: t * m * n * (2 - t) * (1 + t) - (1 - t) * spread(t), 0.0, 1.0, xtol=1e-14)
    else:
        high = 1.0 if auc >= 1 else optimize.brentq(score, auc, 1.0, xtol=1e-14)
    return float(low), float(high)


def boundary_auc_interval(y_true: Sequence[int], auc: float, num_classes: int,
                          confidence: float = 0.95) -> Optional[dict]:
    """An interval of non-zero width for an AUC of exactly 0 or 1 (None for any other AUC).

    Binary: :func:`newcombe_auc_interval` with m = cases of class 1, n = cases of class 0. More classes (the macro AUC
    is 1 only if every one-vs-rest AUC is 1): each class's interval at the Bonferroni level ``1 - (1 - c) / K``, so
    that all K hold together with probability >= c, and the macro mean of their bounds, an interval of the macro AUC
    with coverage >= c (conservative). Returns ``{"low", "high", "method"}``.
    """
    if auc not in (0.0, 1.0):
        return None
    y = np.asarray(y_true, dtype=int)
    if num_classes == 2:
        low, high = newcombe_auc_interval(auc, int((y == 1).sum()), int((y == 0).sum()), confidence)
        return {"low": low, "high": high, "method": "Newcombe score interval (method 5)"}
    level = 1 - (1 - confidence) / num_classes
    bounds = [newcombe_auc_interval(auc, int((y == c).sum()), int((y != c).sum()), level) for c in range(num_classes)]
    return {"low": float(np.mean([b[0] for b in bounds])), "high": float(np.mean([b[1] for b in bounds])),
            "method": f"Newcombe score interval (method 5), macro mean of the {num_classes} one-vs-rest intervals at "
                      f"the Bonferroni level {level:.4f}"}


# ------------------------------------------------------------------------------------------------------- bootstrap
def _validate(y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise MVExtError(f"probabilities must have shape (cases, classes) = ({len(y)}, {k}); got {p.shape}.")
    if len(y) == 0:
        raise MVExtError("No cases to evaluate.")
    if y.min() < 0 or y.max() >= k:
        raise MVExtError(f"Reference classes must be 0..{k - 1} ({', '.join(class_names)}); got {sorted(set(y))}.")
    if not np.all(np.isfinite(p)):
        raise MVExtError("probabilities contain NaN or infinite values.")
    return y, p


def stratified_bootstrap_indices(y_true: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_resamples, N)`` case indices; each row draws, with replacement, as many cases of each class as ``y_true``
    holds, so every resample keeps the class counts (and a metric defined on the data stays defined)."""
    parts = [rng.choice(np.flatnonzero(y_true == c), size=(n_resamples, int((y_true == c).sum())))
             for c in np.unique(y_true)]
    return np.concatenate(parts, axis=1)


def _auc_rows(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row: ``(B, N) bool, (B, N) float -> (B,)``; NaN where a row lacks a class."""
    m = positive.sum(1)
    n = positive.shape[1] - m
    ranks = stats.rankdata(scores, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((m > 0) & (n > 0), ((ranks * positive).sum(1) - m * (m + 1) / 2) / (m * n), np.nan)


def batch_metrics(y: np.ndarray, probabilities: np.ndarray,
                  threshold: Optional[float] = None) -> dict[str, np.ndarray]:
    """Every metric of :func:`metric_names` for B samples at once: ``y (B, N), probabilities (B, N, K)`` ->
    ``{name: (B,)}``, NaN where a metric is undefined.

    With the confusion matrix ``C`` (rows true, columns predicted = arg-max), ``tp_c = C_cc``, support ``r_c``,
    predicted count ``q_c``: accuracy ``sum tp / N``; recall ``tp_c / r_c``; balanced accuracy the mean recall over
    the classes present; F1 ``2 tp_c / (r_c + q_c)``, macro F1 its mean over the classes with ``r_c + q_c > 0``
    (scikit-learn's default labels: present in the reference or the predictions); Cohen's
    kappa ``(p_o - p_e) / (1 - p_e)``, ``p_e = sum r_c q_c / N^2``; AUC by midranks (Mann-Whitney).
    Binary: sensitivity = recall_1, specificity = recall_0, F1 of class 1, AUC of p_1. More classes: sensitivity the
    mean recall over the classes present, specificity the mean of ``tn_c / (N - r_c)``, macro F1, one-vs-rest
    macro AUC and the LLD-MMRI challenge score ``(macro F1 + kappa) / 2``. ``threshold`` (binary): predictions
    ``p_1 >= threshold`` instead of the arg-max.
    """
    b, n, k = probabilities.shape
    pred = predicted_classes(probabilities, threshold)
    flat = (np.arange(b)[:, None] * k * k + y * k + pred).ravel()
    cm = np.bincount(flat, minlength=b * k * k).reshape(b, k, k).astype(float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
        pe = (support * predicted).sum(1) / n ** 2
        accuracy = tp.sum(1) / n
        kappa = np.where(pe < 1, (accuracy - pe) / (1 - pe), np.nan)
        balanced = np.nanmean(recall, axis=1)
        if k == 2:
            sens, spec, f1_out = recall[:, 1], recall[:, 0], np.nan_to_num(f1[:, 1])
            auc = _auc_rows(y == 1, probabilities[:, :, 1])
        else:
            sens = balanced
            negatives = n - support
            tn = negatives - (predicted - tp)
            spec = np.nanmean(np.where(negatives > 0, tn / negatives, np.nan), axis=1)
            f1_out = np.nanmean(f1, axis=1)
            auc = np.mean([_auc_rows(y == c, probabilities[:, :, c]) for c in range(k)], axis=0)
    out = {"auc": auc, "accuracy": accuracy, "balanced_accuracy": balanced, "sensitivity": sens,
           "specificity": spec, "f1": f1_out, "cohen_kappa": kappa}
    if k > 2:
        out["lld_mmri_score"] = (f1_out + kappa) / 2
    return out


def _bootstrap_samples(y: np.ndarray, probability_sets: Sequence[np.ndarray], n_resamples: int,
                       seed: int, thresholds: Sequence[Optional[float]]) -> list[dict[str, np.ndarray]]:
    """Metric values of every model on the same stratified resamples: one ``{name: (n_resamples,)}`` per model."""
    if n_resamples < 1:
        raise MVExtError(f"n_resamples must be at least 1, got {n_resamples}.")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(len(y), 1))
    out: list[dict[str, list]] = [{name: [] for name in metric_names(probability_sets[0].shape[1])}
                                  for _ in probability_sets]
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        idx = stratified_bootstrap_indices(y, size, rng)
        for model, p in enumerate(probability_sets):
            for name, values in batch_metrics(y[idx], p[idx], thresholds[model]).items():
                out[model][name].append(values)
        done += size
    return [{name: np.concatenate(v) for name, v in model.items()} for model in out]


def _percentile(values: np.ndarray, confidence: float) -> tuple[Optional[float], Optional[float]]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return None, None
    low, high = np.quantile(finite, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


def bootstrap_intervals(y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                        n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = 0.95,
                        threshold: Optional[float] = None) -> dict:
    """Stratified percentile bootstrap interval of every metric of :func:`metric_names`.

    Each of ``n_resamples`` resamples draws the cases of each class with replacement, keeping the class counts
    (:func:`stratified_bootstrap_indices`); the interval is the ``(1 - c)/2`` and ``(1 + c)/2`` quantiles of the
    metric over the resamples (Efron's percentile interval). Resamples where the metric is undefined are left out.

    Returns ``{name: {"low", "high", "method"}}`` (``low``/``high`` None when undefined on every resample).

    References
    ----------
    Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13.
    """
    y, p = _validate(y_true, probabilities, class_names)
    samples = _bootstrap_samples(y, [p], n_resamples, seed, [threshold])[0]
    method = f"stratified bootstrap, percentile, {n_resamples} resamples, seed {seed}"
    out = {}
    for name in metric_names(len(class_names)):
        low, high = _percentile(samples[name], confidence)
        out[name] = {"low": low, "high": high, "method": method}
    return out


def paired_bootstrap(y_true: Sequence[int], probabilities_a: np.ndarray, probabilities_b: np.ndarray,
                     class_names: Sequence[str], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     confidence: float = 0.95, threshold_a: Optional[float] = None,
                     threshold_b: Optional[float] = None) -> dict:
    """Paired stratified bootstrap of ``metric(a) - metric(b)`` for two models on the same cases.

    Both models are scored on the same resamples; the interval is the percentile interval of the differences and
    the two-sided p-value the achieved significance level ``min(1, 2 (min(#{d <= 0}, #{d >= 0}) + 1) / (B + 1))``
    (B resamples), so ``p < 1 - c`` about when the interval excludes 0.

    Returns ``{name: {"difference", "low", "high", "p", "method"}}`` with ``difference`` the point difference on
    the data (None when the metric is undefined there).

    References
    ----------
    Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13 and 16.
    """
    y, pa = _validate(y_true, probabilities_a, class_names)
    _, pb = _validate(y_true, probabilities_b, class_names)
    sa, sb = _bootstrap_samples(y, [pa, pb], n_resamples, seed, [threshold_a, threshold_b])
    point_a, point_b = batch_metrics(y[None], pa[None], threshold_a), batch_metrics(y[None], pb[None], threshold_b)
    method = f"paired stratified bootstrap, percentile, {n_resamples} resamples, seed {seed}"
    out = {}
    for name in metric_names(len(class_names)):
        d = sa[name] - sb[name]
        d = d[np.isfinite(d)]
        point = float(point_a[name][0] - point_b[name][0])
        low, high = _percentile(d, confidence)
        if len(d) == 0:
            p = None
        else:
            p = float(min(1.0, 2 * (min((d <= 0).sum(), (d >= 0).sum()) + 1) / (len(d) + 1)))
        out[name] = {"difference": point if np.isfinite(point) else None, "low": low, "high": high, "p": p,
                     "method": method}
    return out


def metrics_with_intervals(y_true: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                           n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, confidence: float = 0.95,
                           threshold: Optional[float] = None) -> dict:
    """:func:`~nnunet_mvext.classification.metrics.classification_metrics` plus ``"intervals"``.

    ``result["intervals"][name] = {"low", "high", "method"}`` for every metric of :func:`metric_names`:
    DeLong's interval for a binary AUC (the headline; bootstrap when a class has fewer than two cases), the
    stratified percentile bootstrap (:func:`bootstrap_intervals`) for everything else. An AUC of exactly 0 or 1, where
    both give an interval of zero width, gets :func:`boundary_auc_interval` instead, flagged by
    ``result["auc_interval_note"]``. A metric that is None
    (undefined on the data) gets ``low = high = None``. ``result["confidence"]`` holds the level. ``threshold``
    (binary): predictions ``p_1 >= threshold`` instead of the arg-max, for the point metrics and every resample.
    """
    y, p = _validate(y_true, probabilities, class_names)
    result = classification_metrics(y, p, class_names, threshold=threshold)
    intervals = bootstrap_intervals(y, p, class_names, n_resamples=n_resamples, seed=seed, confidence=confidence,
                                    threshold=threshold)
    if len(class_names) == 2 and min((y == 0).sum(), (y == 1).sum()) >= 2:
        d = delong_auc(y, p[:, 1], confidence=confidence)
        intervals["auc"] = {"low": d["low"], "high": d["high"], "method": "DeLong", "se": d["se"]}
    boundary = None if result["auc"] is None else boundary_auc_interval(y, result["auc"], len(class_names), confidence)
    if boundary is not None:
        result["auc_interval_note"] = (
            f"AUC is {result['auc']:g}: {intervals['auc']['method'].split(',')[0]} gives an interval of zero width "
            f"there; reported instead: {boundary['method']}, [{boundary['low']:.3f}, {boundary['high']:.3f}]")
        intervals["auc"] = boundary
    for name in metric_names(len(class_names)):
        if result.get(name) is None:
            intervals[name] = {"low": None, "high": None, "method": intervals[name]["method"]}
    result["intervals"] = intervals
    result["confidence"] = confidence
    return result
