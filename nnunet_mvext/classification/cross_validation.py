"""``nnunet-mvext evaluate-cls --cv``: pooled out-of-fold metrics of a cross-validated classification model.

Each fold's ``fold_X/validation/classification.csv`` (written by the fusion trainers after training) holds the
predictions of the model that did not train on those cases. Pooling the folds gives one prediction per case from a
model that never saw it: the out-of-fold result a paper reports (written as ``oof_classification.csv`` for
compare-cls), with intervals (DeLong for a binary AUC, the stratified bootstrap for the rest), next to the per-fold
metrics (mean ± sd over the folds).

Provenance: each fold CSV's provenance columns (written by the fusion trainers' validation): a fold validated with a
checkpoint selected on its own validation cases (``--val_best``) is warned about on screen and in the report, because
its predictions, and so the pooled metrics, are optimistic; so is a fold initialised from a ``pretrained_checkpoint``
of another fold, of a fold not recorded, or shared with other folds (the segmentation model trained on their
validation cases). A fold CSV without these columns is named in ``provenance_note``.

Refused before anything is computed, by name: a missing fold (the default folds 0-4; ``-f`` names the folds you
have), a fold named twice, fold ``all`` (it validates on its own training cases), a case in two folds, class names
that differ between folds (the ``p_<class>`` columns are matched by name, in the class order of the model folder's
``dataset.json``, else of the first fold), and a case without a reference label.

Reference labels: the ``classification`` block of the ``dataset.json`` that nnU-Net copied into the model folder
(what the trainer used), else the ``true_class`` column of the CSVs; when both exist they must agree.

``--store-threshold`` (binary only) writes the Youden threshold chosen on the pooled out-of-fold predictions to
``<model folder>/classification_threshold.json``::

    {"threshold": t, "positive_class": name, "chosen_on": "pooled out-of-fold predictions of folds [0, 1, 2, 3, 4]",
     "method": "youden"}
"""

from __future__ import annotations

import csv
import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.classification.case_labels import names_in_order
from nnunet_mvext.classification.evaluation import (
    METRIC_LABELS,
    _list,
    lesion_localisation,
    report_markdown,
    score,
    write_outputs,
)
from nnunet_mvext.classification.metrics import (
    classification_metrics,
    predicted_classes,
    read_column,
    read_decision_threshold,
    read_predictions_csv,
    read_true_classes,
)
from nnunet_mvext.classification.prediction_table import (
    align_columns,
    aligned_threshold,
    decision_rule,
    provenance_warnings,
    read_provenance,
)
from nnunet_mvext.classification.statistics import DEFAULT_RESAMPLES, metric_names
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import read_json, write_json_with_backup

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = ("0", "1", "2", "3", "4")
THRESHOLD_FILE = "classification_threshold.json"
POOLED_CSV = "oof_classification.csv"


def write_pooled_csv(path: str, cases: Sequence[str], folds: Sequence[str], probabilities: np.ndarray,
                     class_names: Sequence[str], y: Sequence[int], threshold: Optional[float]) -> None:
    """``case_id, predicted_class, p_<class>..., fold, decision_rule, true_class``: the pooled out-of-fold
    predictions, readable by evaluate-cls and compare-cls."""
    predicted = predicted_classes(probabilities, threshold)
    rule = decision_rule(class_names, threshold)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "predicted_class"] + [f"p_{n}" for n in class_names] +
                        ["fold", "decision_rule", "true_class"])
        for i, case in enumerate(cases):
            writer.writerow([case, class_names[int(predicted[i])]] + [f"{v:.6f}" for v in probabilities[i]] +
                            [folds[i], rule, class_names[int(y[i])]])


def model_folder(dataset: str, configuration: str, trainer: str, plans: str = "nnUNetPlans") -> str:
    """``nnUNet_results/<DatasetXXX_Name>/<trainer>__<plans>__<configuration>`` (must exist)."""
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_results.is_set():
        raise MVExtError("nnUNet_results is not set; it is where nnU-Net wrote the trained folds.")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    folder = os.path.join(str(nnUNet_results), name, f"{trainer}__{plans}__{configuration}")
    if not os.path.isdir(folder):
        raise MVExtError(f"Model folder {folder} does not exist; check -tr {trainer}, -p {plans}, -c {configuration}.")
    return folder


def fold_csvs(folder: str, folds: Optional[Sequence[str]]) -> dict[str, str]:
    """``{fold: path of its validation/classification.csv}``; refuses missing, duplicated and 'all' folds."""
    named = folds is not None
    folds = [str(f) for f in (folds if named else DEFAULT_FOLDS)]
    repeated = sorted({f for f in folds if folds.count(f) > 1})
    if repeated:
        raise MVExtError(f"-f names fold {', '.join(repeated)} more than once; name each fold once.")
    if "all" in folds:
        raise MVExtError("Fold 'all' trains on every case, so its validation cases are training cases; it has no "
                         "out-of-fold predictions. Pool the cross-validation folds (e.g. -f 0 1 2 3 4).")
    paths = {f: os.path.join(folder, f"fold_{f}", "validation", "classification.csv") for f in folds}
    missing = [f for f, p in paths.items() if not os.path.isfile(p)]
    if missing:
        hint = ("" if named else f" Train and validate them, or name the folds you have with -f "
                f"{' '.join(f for f in folds if f not in missing) or 'FOLD ...'}.")
        raise MVExtError(f"No validation/classification.csv for fold{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} in {folder} (expected {paths[missing[0]]}).{hint}")
    return paths


def _model_class_names(folder: str) -> tuple[Optional[list[str]], Optional[str]]:
    """The class order of the model folder's ``dataset.json`` block (what the trainer used), or ``(None, None)``."""
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        return None, None
    block = read_json(path, "dataset.json").get("classification")
    if not isinstance(block, dict) or not isinstance(block.get("class_names"), dict):
        return None, None
    return names_in_order(block["class_names"], path), path


def _reference_labels(folder: str, per_fold: dict, class_names: list[str]) -> dict[str, int]:
    """``{case: class index}`` from the model folder's dataset.json block and/or the ``true_class`` columns."""
    block_labels = None
    dataset_json = os.path.join(folder, "dataset.json")
    if os.path.isfile(dataset_json):
        block = read_json(dataset_json, "dataset.json").get("classification")
        if isinstance(block, dict) and isinstance(block.get("labels"), dict):
            names = names_in_order(block["class_names"], dataset_json)
            if names != class_names:
                raise MVExtError(f"Class names differ: {dataset_json} has {names}, the fold CSVs have {class_names}.")
            block_labels = {c: int(v) for c, v in block["labels"].items()}
    column_labels: dict[str, int] = {}
    for path, cases, _ in per_fold.values():
        true = read_true_classes(path)
        if true is None:
            continue
        for case in cases:
            if true[case] not in class_names:
                raise MVExtError(f"{path}: case '{case}' has true_class '{true[case]}'; allowed: "
                                 f"{', '.join(class_names)}.")
            column_labels[case] = class_names.index(true[case])
    if block_labels is None and not column_labels:
        raise MVExtError(f"No reference labels: {dataset_json} has no 'classification' block and the fold CSVs no "
                         f"true_class column.")
    if block_labels is not None:
        differ = sorted(c for c, v in column_labels.items() if c in block_labels and block_labels[c] != v)
        if differ:
            raise MVExtError(f"The true_class column of the fold CSVs and {dataset_json} disagree for "
                             f"{len(differ)} case(s): {_list(differ)}. Validate the folds again after changing "
                             f"labels (nnUNetv2_train ... --val).")
        return block_labels
    return column_labels


def _mean_sd(values: list[Optional[float]]) -> dict:
    finite = [v for v in values if v is not None]
    return {"mean": float(np.mean(finite)) if finite else None,
            "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None, "folds_defined": len(finite)}


def per_fold_table_markdown(per_fold: dict, summary: dict) -> str:
    names = [n for n in summary if n in next(iter(per_fold.values()))]
    lines = ["| fold | cases | " + " | ".join(METRIC_LABELS[n] for n in names) + " |",
             "|---" * (len(names) + 2) + "|"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    for fold, m in per_fold.items():
        lines.append(f"| {fold} | {m['num_cases']} | " + " | ".join(fmt(m[n]) for n in names) + " |")
    lines.append("| mean ± sd | | " + " | ".join(
        "n/a" if summary[n]["mean"] is None else
        f"{summary[n]['mean']:.3f} ± {'n/a' if summary[n]['sd'] is None else format(summary[n]['sd'], '.3f')}"
        for n in names) + " |")
    return "\n".join(lines)


def evaluate_cross_validation(dataset: str, configuration: str, trainer: str, output_folder: str,
                              plans: str = "nnUNetPlans", folds: Optional[Sequence[str]] = None,
                              n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                              store_threshold: bool = False) -> dict:
    """Pool the folds' validation predictions and write ``cv_metrics.json``, ``report.md``, the plots and
    ``oof_classification.csv`` (the pooled predictions, for ``compare-cls``).

    Returns ``{"pooled": metrics with intervals, "per_fold": {fold: point metrics}, "per_fold_summary":
    {metric: {"mean", "sd", "folds_defined"}}, "folds", "model_folder", "sources", "threshold_file", "provenance":
    {fold: the CSV's provenance columns}}``; ``pooled["warnings"]`` lists the folds validated with a checkpoint
    selected on them.
    """
    folder = model_folder(dataset, configuration, trainer, plans)
    paths = fold_csvs(folder, folds)
    class_names, first = _model_class_names(folder)
    per_fold_data, seen, thresholds = {}, {}, {}
    for fold, path in paths.items():
        cases, names, probs = read_predictions_csv(path)
        if class_names is None:
            class_names, first = names, path
        probs = align_columns(probs, names, class_names, path, first)
        overlap = [c for c in cases if c in seen]
        if overlap:
            raise MVExtError(f"Case(s) {_list(overlap)} appear in the validation of fold {seen[overlap[0]]} and of "
                             f"fold {fold}: folds must not overlap (were they trained on different splits?).")
        seen.update({c: fold for c in cases})
        per_fold_data[fold] = (path, cases, probs)
        thresholds[fold] = aligned_threshold(read_decision_threshold(path, names), names, class_names, path)
    if len(set(thresholds.values())) > 1:
        raise MVExtError(f"The folds' predictions use different decision rules ({thresholds}, None = arg-max); "
                         f"pool predictions made with one rule.")
    threshold = next(iter(thresholds.values()))
    labels = _reference_labels(folder, per_fold_data, class_names)
    unlabeled = [c for c in seen if c not in labels]
    if unlabeled:
        raise MVExtError(f"{len(unlabeled)} validated case(s) have no reference label: {_list(unlabeled)}.")
    if store_threshold and len(class_names) != 2:
        raise MVExtError(f"--store-threshold needs a binary task; this one has {len(class_names)} classes "
                         f"({', '.join(class_names)}).")
    all_cases = [c for _, cases, _ in per_fold_data.values() for c in cases]
    probs = np.concatenate([p for _, _, p in per_fold_data.values()])
    y = [labels[c] for c in all_cases]
    pooled = score(y, probs, class_names, n_resamples, seed, threshold)
    rois = [read_column(path, "roi") for path in paths.values()]
    pooled["lesion_localisation"] = lesion_localisation(
        None if None in rois else {c: v for r in rois for c, v in r.items()}, all_cases, y, probs, class_names,
        n_resamples, seed, threshold)
    provenance = {fold: read_provenance(path) for fold, path in paths.items()}
    pooled["warnings"] = [w for fold, p in provenance.items() for w in provenance_warnings(p, f"fold {fold}", fold)]
    pretrained = {}
    for fold, p in provenance.items():
        if p.get("pretrained_checkpoint"):
            pretrained.setdefault(p["pretrained_checkpoint"], []).append(fold)
    pooled["warnings"] += [f"folds {', '.join(folds)} were all initialised from {path}: one segmentation model "
                           f"trained on the validation cases of at least all but one of them"
                           for path, folds in pretrained.items() if len(folds) > 1]
    for warning in pooled["warnings"]:
        logger.warning("WARNING: %s", warning)
    unknown = [fold for fold, p in provenance.items() if "checkpoint_selected_on_these_cases" not in p]
    if unknown:
        pooled["provenance_note"] = (f"the CSV of fold{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} names no "
                                     f"checkpoint (written by an earlier release): whether it was selected on its "
                                     f"validation cases is not known")
    if store_threshold and pooled.get("youden") is None:
        raise MVExtError("--store-threshold: the pooled reference holds a single class; no threshold can be chosen.")
    per_fold = {}
    for fold, (_, cases, p) in per_fold_data.items():
        m = classification_metrics([labels[c] for c in cases], p, class_names, threshold=threshold)
        per_fold[fold] = {k: m[k] for k in ("num_cases", *metric_names(len(class_names)), "collapse_warning")}
        if m["collapse_warning"]:
            logger.warning("WARNING: fold %s: %s", fold, m["collapse_warning"])
    summary = {n: _mean_sd([m[n] for m in per_fold.values()]) for n in metric_names(len(class_names))}
    fold_list = [int(f) if f.isdigit() else f for f in paths]
    result = {"pooled": pooled, "per_fold": per_fold, "per_fold_summary": summary, "folds": fold_list,
              "provenance": provenance,
              "model_folder": folder, "sources": list(paths.values()), "threshold_file": None}
    if store_threshold:
        threshold_path = os.path.join(folder, THRESHOLD_FILE)
        write_json_with_backup(threshold_path, {
            "threshold": pooled["youden"]["threshold"], "positive_class": class_names[1],
            "chosen_on": f"pooled out-of-fold predictions of folds {fold_list}", "method": "youden"})
        result["threshold_file"] = threshold_path
        logger.info("Wrote the Youden threshold %.4f on p(%s) to %s", pooled["youden"]["threshold"],
                    class_names[1], threshold_path)
    title = f"Cross-validation: {os.path.basename(folder)}, folds {', '.join(paths)} (pooled out-of-fold)"
    write_outputs(pooled, y, probs, class_names, output_folder, "pooled_metrics.json", title, list(paths.values()))
    write_pooled_csv(os.path.join(output_folder, POOLED_CSV), all_cases,
                     [fold for fold, (_, cases, _) in per_fold_data.items() for _ in cases], probs, class_names, y,
                     threshold)
    with open(os.path.join(output_folder, "cv_metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    report = report_markdown(pooled, title, list(paths.values()))
    report += "\n## Per fold\n\n" + per_fold_table_markdown(per_fold, summary) + "\n\n" + \
        "Each fold's metrics are computed on its own validation cases; the headline numbers above pool the " \
        "out-of-fold predictions of all folds into one set.\n"
    if result["threshold_file"]:
        report += f"\nStored the Youden threshold in `{result['threshold_file']}`.\n"
    with open(os.path.join(output_folder, "report.md"), "w") as f:
        f.write(report)
    return result
