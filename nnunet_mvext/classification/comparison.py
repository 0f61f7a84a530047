"""``nnunet-mvext compare-cls``: paired comparison of classification models on the same cases.

The first predictions CSV is the baseline; every other model is compared with it (model - baseline). Binary AUC:
DeLong's paired test (z, p, interval of the difference); the other metrics, and AUC with more than two classes: the
paired stratified bootstrap (both models scored on the same resamples). p-values are per comparison, not adjusted
for the number of models or metrics.

All CSVs must hold the same cases and class names (their ``p_<class>`` columns are matched by name, in any order);
every case needs a reference label (``--chill``: the reference may hold more cases than were predicted).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.classification.evaluation import (
    METRIC_LABELS,
    _fmt,
    _list,
    class_order,
    load_reference,
    match_cases,
    metrics_table_markdown,
)
from nnunet_mvext.classification.metrics import read_decision_threshold, read_predictions_csv
from nnunet_mvext.classification.prediction_table import align_columns, aligned_threshold
from nnunet_mvext.classification.statistics import (
    DEFAULT_RESAMPLES,
    delong_paired_test,
    metric_names,
    metrics_with_intervals,
    paired_bootstrap,
)
from nnunet_mvext.errors import MVExtError

logger = logging.getLogger(__name__)


def model_labels(paths: Sequence[str]) -> list[str]:
    """Short unique names: the shortest path tail (``fold_0/validation/classification.csv`` -> enough parent
    folders to tell the files apart)."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    seen = {}
    for path, p in zip(paths, parts):
        if tuple(p) in seen:
            raise MVExtError(f"The predictions file {path} is given twice (also as {seen[tuple(p)]}); a model is "
                             f"compared with another one, not with itself.")
        seen[tuple(p)] = path
    depth = 1
    while len({tuple(p[-depth:]) for p in parts}) < len(parts):
        depth += 1
    return ["/".join(p[-depth:]) for p in parts]


def compare_classifiers(reference: str, predictions: Sequence[str], output_folder: str, chill: bool = False,
                        n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        names: Optional[Sequence[str]] = None, dataset: Optional[str] = None) -> dict:
    """Compare each of ``predictions[1:]`` with ``predictions[0]`` on the same cases; writes ``comparison.json``
    and ``comparison.md``. Classes are matched by name as in ``evaluate-cls`` (``dataset``: ``-d``, for integer
    classes in a CSV reference; :func:`~nnunet_mvext.classification.evaluation.class_order`). Returns
    ``{"baseline", "models": {name: metrics with intervals}, "comparisons": {name: {metric: {"difference", "low",
    "high", "p", "method"[, "z"]}}}, "cases", "table_markdown"}``."""
    if len(predictions) < 2:
        raise MVExtError("compare-cls needs at least two predictions CSVs: the baseline first, then the models.")
    labels = list(names) if names else model_labels(predictions)
    loaded = [read_predictions_csv(p) for p in predictions]
    cases0 = loaded[0][0]
    for path, (cases, _, _) in zip(predictions[1:], loaded[1:]):
        only0, only1 = sorted(set(cases0) - set(cases)), sorted(set(cases) - set(cases0))
        if only0 or only1:
            raise MVExtError("A paired comparison needs the same cases in every file. "
                             + (f"Only in {predictions[0]}: {_list(only0)}. " if only0 else "")
                             + (f"Only in {path}: {_list(only1)}." if only1 else ""))
    order, order_source = class_order(reference, predictions, dataset)
    truth, class_names = load_reference(reference, order, order_source, loaded[0][1])
    order_source = order_source or f"{predictions[0]} (the baseline; the reference names its classes)"
    match_cases(truth, cases0, reference, predictions[0], chill)
    y = np.array([truth[c] for c in cases0])
    probs, thresholds = [], []
    for path, (cases, file_names, p) in zip(predictions, loaded):
        row = {c: i for i, c in enumerate(cases)}
        probs.append(align_columns(p, file_names, class_names, path, order_source)[[row[c] for c in cases0]])
        thresholds.append(aligned_threshold(read_decision_threshold(path, file_names), file_names, class_names,
                                            path))
    models = {label: metrics_with_intervals(y, p, class_names, n_resamples=n_resamples, seed=seed, threshold=t)
              for label, p, t in zip(labels, probs, thresholds)}
    for label, m in models.items():
        if m["collapse_warning"]:
            logger.warning("WARNING: %s: %s", label, m["collapse_warning"])
    binary_delong = len(class_names) == 2 and min((y == 0).sum(), (y == 1).sum()) >= 2
    comparisons = {}
    for label, p, t in zip(labels[1:], probs[1:], thresholds[1:]):
        comp = paired_bootstrap(y, p, probs[0], class_names, n_resamples=n_resamples, seed=seed, threshold_a=t,
                                threshold_b=thresholds[0])
        if binary_delong:
            d = delong_paired_test(y, p[:, 1], probs[0][:, 1])
            comp["auc"] = {k: d[k] for k in ("difference", "low", "high", "p", "z", "method")}
        comparisons[label] = comp
    table = comparison_table_markdown(labels, models, comparisons)
    result = {"baseline": labels[0], "files": dict(zip(labels, map(os.path.abspath, predictions))),
              "reference": os.path.abspath(reference), "cases": len(cases0), "class_names": class_names,
              "models": models, "comparisons": comparisons, "table_markdown": table,
              "note": f"every model is compared with the baseline '{labels[0]}' (difference = model - baseline); "
                      f"p-values are not adjusted for multiple comparisons"}
    os.makedirs(output_folder, exist_ok=True)
    with open(os.path.join(output_folder, "comparison.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(output_folder, "comparison.md"), "w") as f:
        f.write(comparison_markdown(result))
    return result


def comparison_table_markdown(labels: Sequence[str], models: dict, comparisons: dict) -> str:
    """One row per (metric, model): value with its interval, and the difference to the baseline with its interval
    and p-value."""
    level = int(round(100 * next(iter(models.values()))["confidence"]))
    lines = [f"| metric | model | value ({level} % CI) | difference vs baseline ({level} % CI) | p | test |",
             "|---|---|---|---|---|---|"]
    for name in metric_names(len(next(iter(models.values()))["class_names"])):
        for i, label in enumerate(labels):
            m = models[label]
            iv = m["intervals"][name]
            value = _fmt(m[name]) + ("" if iv["low"] is None else f" ({iv['low']:.3f} – {iv['high']:.3f})")
            if i == 0:
                lines.append(f"| {METRIC_LABELS[name]} | {label} (baseline) | {value} | | | |")
                continue
            c = comparisons[label][name]
            diff = "n/a" if c["difference"] is None else f"{c['difference']:+.3f}" + (
                "" if c["low"] is None else f" ({c['low']:+.3f} – {c['high']:+.3f})")
            p = "n/a" if c["p"] is None else ("< 0.001" if c["p"] < 0.001 else f"{c['p']:.3f}")
            lines.append(f"| {METRIC_LABELS[name]} | {label} | {value} | {diff} | {p} | {c['method'].split(',')[0]} |")
    return "\n".join(lines)


def comparison_markdown(result: dict) -> str:
    lines = [f"# Comparison against the baseline '{result['baseline']}'", "",
             f"{result['cases']} cases, classes {', '.join(result['class_names'])}; {result['note']}.", "",
             result["table_markdown"], ""]
    for label, m in result["models"].items():
        if m.get("collapse_warning"):
            lines += [f"**WARNING ({label}): {m['collapse_warning']}**", ""]
    lines += ["Files: " + ", ".join(f"{k} = `{v}`" for k, v in result["files"].items()), ""]
    lines += ["## Each model", ""]
    for label, m in result["models"].items():
        lines += [f"### {label}", "", metrics_table_markdown(m), ""]
    return "\n".join(lines)
