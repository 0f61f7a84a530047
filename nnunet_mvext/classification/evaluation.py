"""``nnunet-mvext evaluate-cls``: a predictions CSV against reference labels, with intervals and calibration.

Reference: a ``case_id,class`` CSV (class = class name or integer index) or a ``dataset.json`` with the
``classification`` block. Classes are matched by NAME, never by column position (picai_eval's rule: class names, not
column positions, link a prediction to its reference): the ``p_<class>`` columns may come in any order, and an
integer class is read through the dataset's class names (``-d``, else the ``dataset.json`` that ``predict-cls``
writes beside its CSV; :func:`class_order`), or refused. Every input is validated before anything is computed or
any folder created: an empty file, a duplicated case row, a probability that is not a number in [0, 1], class names
that differ between the files (naming the classes only in each) and (without ``--chill``, which scores the cases
present in both and names the counts) predicted cases without a reference label and reference cases without a
prediction are refused, naming the file, row and case.

Writes into the output folder: ``classification_metrics.json`` (the point metrics of
:func:`~nnunet_mvext.classification.metrics.classification_metrics`, ``intervals``: DeLong for a binary AUC, the
stratified bootstrap for the rest, calibration, per-class recall and precision, the collapse warning and, for a
binary task, the Youden threshold; ``lesion_localisation`` when the CSV has the ``roi`` column: how many cases had no
predicted lesion and the metrics without them), ``report.md``, ``roc.png``, ``confusion_matrix.png``,
``reliability.png`` and, given embeddings, ``tsne.png``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.classification.case_labels import (
    BLOCK,
    class_block,
    class_names,
    dataset_class_names,
    names_in_order,
    read_labels_csv,
)
from nnunet_mvext.classification.metrics import (
    plot_confusion,
    plot_reliability_diagram,
    plot_roc,
    plot_tsne,
    read_column,
    read_decision_threshold,
    read_predictions_csv,
    youden_threshold,
)
from nnunet_mvext.classification.prediction_table import (
    align_columns,
    aligned_threshold,
    provenance_warnings,
    read_provenance,
)
from nnunet_mvext.classification.statistics import DEFAULT_RESAMPLES, metric_names, metrics_with_intervals
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import read_json

logger = logging.getLogger(__name__)

METRIC_LABELS = {"auc": "AUC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "sensitivity": "sensitivity", "specificity": "specificity", "f1": "F1",
                 "cohen_kappa": "Cohen's kappa", "lld_mmri_score": "LLD-MMRI challenge score (F1 + kappa) / 2"}


def _list(items: Sequence[str], limit: int = 10) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def class_order(reference: str, predictions: Sequence[str], dataset: Optional[str] = None) -> tuple[list, str]:
    """``(class names, their source)`` through which the reference's classes are read and the ``p_<class>`` columns
    matched, by name: a ``dataset.json`` reference's own block; else ``dataset`` (``-d``); else the block of the
    ``dataset.json`` that ``predict-cls`` writes beside its CSV (the first of ``predictions`` that has one). ``([],
    "")`` when none of them exists: then only a reference that names its classes can be read."""
    if reference.endswith(".json"):
        return class_names(read_json(reference, "reference"), reference), reference
    if dataset is not None:
        names, path = dataset_class_names(dataset)
        return names, f"{path} (-d {dataset})"
    for csv_path in predictions:
        beside = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "dataset.json")
        if os.path.isfile(beside):
            block = read_json(beside, "dataset.json").get(BLOCK)
            if isinstance(block, dict) and isinstance(block.get("class_names"), dict):
                return names_in_order(block["class_names"], beside), beside
    return [], ""


def load_reference(path: str, names: Sequence[str], names_source: str,
                   predicted_names: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """``({case_id: class index}, class names)``: the reference's labels as indices into the returned names.

    ``names``: the class order of :func:`class_order` (``names_source`` says where it comes from). A ``dataset.json``
    reference holds indices into its own block. In a ``case_id,class`` CSV a class is a name or an integer index; an
    integer is read through ``names`` only, never through the position of a ``p_<class>`` column, so it is refused
    when ``names`` is empty. Without ``names`` the classes named in the CSV are taken in the order of
    ``predicted_names`` (the predictions' columns).
    """
    if path.endswith(".json"):
        content = read_json(path, "reference")
        block, names = class_block(content, path), class_names(content, path)
        labels = {}
        for case, value in block["labels"].items():
            if not isinstance(value, int) or not 0 <= value < len(names):
                raise MVExtError(f"{path}: case '{case}' has class {value!r}; allowed: 0..{len(names) - 1}.")
            labels[case] = value
        return labels, list(names)
    raw = read_labels_csv(path)
    order = list(names) or list(predicted_names)
    labels = {}
    for case, value in raw.items():
        if value in order:
            labels[case] = order.index(value)
            continue
        try:
            index = int(value)
        except ValueError:
            allowed = (f"0..{len(names) - 1} or {', '.join(names)} ({names_source})" if names else
                       f"{', '.join(order)} (the p_<class> columns of the predictions)")
            raise MVExtError(f"{path}: case '{case}' has class '{value}'; allowed: {allowed}.") from None
        if not names:
            raise MVExtError(f"{path}: case '{case}' has the integer class {index}, and no class names are known to "
                             f"read it through (a column's position is not used). Pass the dataset with -d, keep the "
                             f"dataset.json that predict-cls writes beside its classification.csv, or write class "
                             f"names ({', '.join(order)}) instead of integers.")
        if not 0 <= index < len(names):
            raise MVExtError(f"{path}: case '{case}' has class {index}, out of range (allowed: 0..{len(names) - 1}, "
                             f"the classes {', '.join(names)} of {names_source}).")
        labels[case] = index
    return labels, order


def match_cases(truth: dict[str, int], cases: Sequence[str], reference: str, predictions_csv: str,
                chill: bool) -> list[str]:
    """The reference cases left out (``chill``); refuses predicted cases without a label and, without ``chill``,
    reference cases without a prediction, naming them."""
    unknown = [c for c in cases if c not in truth]
    if unknown:
        raise MVExtError(f"{predictions_csv} holds {len(unknown)} case(s) that {reference} has no label for: "
                         f"{_list(unknown)}. Check the case ids (or the reference file).")
    predicted = set(cases)
    missing = sorted(c for c in truth if c not in predicted)
    if missing and not chill:
        raise MVExtError(f"{reference} holds {len(missing)} case(s) that {predictions_csv} has no prediction for: "
                         f"{_list(missing)}. Pass --chill to score only the predicted cases.")
    return missing


def cases_in_both(truth: dict[str, int], cases: Sequence[str], reference: str, predictions_csv: str,
                  chill: bool) -> tuple[list[str], list[str], list[str]]:
    """``(scored cases in the predictions' order, predicted cases without a reference label, reference cases without
    a prediction)``. Without ``chill`` either kind of unmatched case is refused, naming them and pointing to
    ``--chill``; with it the cases present in both are scored and the counts logged (predictions over import-lld's
    ``imagesTs`` hold labelled and unreleased cases, ``labelsTs/classification.csv`` the labelled ones only). No
    case in both is refused."""
    predicted = set(cases)
    unlabelled = [c for c in cases if c not in truth]
    missing = sorted(c for c in truth if c not in predicted)
    scored = [c for c in cases if c in truth]
    if (unlabelled or missing) and not chill:
        parts = ([f"{predictions_csv} holds {len(unlabelled)} case(s) that {reference} has no label for: "
                  f"{_list(unlabelled)}"] if unlabelled else []) + \
                ([f"{reference} holds {len(missing)} case(s) that {predictions_csv} has no prediction for: "
                  f"{_list(missing)}"] if missing else [])
        raise MVExtError("; ".join(parts) + f". Pass --chill to score only the {len(scored)} case(s) present in "
                                            f"both (e.g. predictions over import-lld's imagesTs, whose unreleased "
                                            f"cases have no label), or check the case ids.")
    if not scored:
        raise MVExtError(f"No case of {predictions_csv} has a label in {reference} ({len(cases)} predicted, "
                         f"{len(truth)} labelled; e.g. {_list(cases, 3)} against {_list(sorted(truth), 3)}). Check "
                         f"that both name the same cases.")
    if unlabelled or missing:
        logger.info("--chill: scoring the %d case(s) present in both; left out: %d predicted case(s) without a label "
                    "in %s%s, %d reference case(s) without a prediction%s.", len(scored), len(unlabelled), reference,
                    f" ({_list(unlabelled)})" if unlabelled else "", len(missing),
                    f" ({_list(missing)})" if missing else "")
    return scored, unlabelled, missing


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def metrics_table_markdown(result: dict) -> str:
    """``| metric | value | 95 % CI | interval |`` rows for a :func:`metrics_with_intervals` result."""
    level = int(round(100 * result.get("confidence", 0.95)))
    lines = [f"| metric | value | {level} % CI | interval |", "|---|---|---|---|"]
    for name in metric_names(len(result["class_names"])):
        iv = result.get("intervals", {}).get(name, {})
        ci = "n/a" if iv.get("low") is None else f"{iv['low']:.3f} – {iv['high']:.3f}"
        method = iv.get("method", "").split(",")[0] if iv.get("low") is not None else ""
        value = _fmt(result[name]) if result[name] is not None else f"n/a ({result.get(name + '_note', '')})"
        lines.append(f"| {METRIC_LABELS[name]} | {value} | {ci} | {method} |")
    return "\n".join(lines)


def report_markdown(result: dict, title: str, sources: Sequence[str] = ()) -> str:
    """A short report: metrics with intervals, per-class recall and precision, calibration, warnings, threshold."""
    lines = [f"# {title}", ""]
    if result.get("collapse_warning"):
        lines += [f"**WARNING: {result['collapse_warning']}**", ""]
    for warning in result.get("warnings", []):
        lines += [f"**WARNING: {warning}**", ""]
    lines += [f"{result['num_cases']} cases, classes {', '.join(result['class_names'])}. "
              f"Intervals: {result['intervals']['accuracy']['method']}"
              + ("; binary AUC: DeLong." if result["intervals"]["auc"].get("method") == "DeLong" else
                 f"; AUC: {result['intervals']['auc']['method']} (see the notes)." if "auc_interval_note" in result
                 else "."), ""]
    lines += [f"Prediction: {result['definitions']['prediction']}.", "", metrics_table_markdown(result), ""]
    lines += ["| class | cases | predicted | recall | precision |", "|---|---|---|---|---|"]
    for row in result["per_class"]:
        lines.append(f"| {row['class']} | {row['support']} | {row['predicted']} | {_fmt(row['recall'])} | "
                     f"{_fmt(row['precision'])} |")
    cal = result["calibration"]
    lines += ["", f"Calibration: Brier score {cal['brier']:.4f}, expected calibration error {cal['ece']:.4f} "
                  f"({cal['n_bins']} equal-width bins of the top-label confidence; `reliability.png`).", ""]
    if result.get("youden"):
        y = result["youden"]
        lines += [f"Youden threshold on p({result['definitions']['positive_class']}): {y['threshold']:.4f} "
                  f"(sensitivity {y['sensitivity']:.3f}, specificity {y['specificity']:.3f}); chosen on these "
                  f"cases, so optimistic if applied to them.", ""]
    notes = [f"- {k[:-5]}: {v}" for k, v in result.items() if k.endswith("_note")]
    if notes:
        lines += ["Notes:"] + notes + [""]
    local = result.get("lesion_localisation")
    if local is not None:
        lines += ["## Cases without a predicted lesion", "", local["summary"] + ".", ""]
        if local["metrics_with_predicted_lesion_only"] is not None:
            lines += [f"Metrics of the {local['metrics_with_predicted_lesion_only']['num_cases']} cases with a "
                      f"predicted lesion:", "", metrics_table_markdown(local["metrics_with_predicted_lesion_only"]), ""]
    defs = result["definitions"]
    lines += ["Definitions: " + "; ".join(f"{k}: {v}" for k, v in defs.items()) + ".", ""]
    if sources:
        lines += ["Sources: " + ", ".join(f"`{s}`" for s in sources), ""]
    return "\n".join(lines)


def score(y: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str], n_resamples: int,
          seed: int, threshold: Optional[float] = None) -> dict:
    """:func:`metrics_with_intervals` plus the Youden threshold (binary, both classes present); logs the collapse
    warning. ``threshold``: the binary decision rule the predictions used (None: arg-max)."""
    result = metrics_with_intervals(y, probabilities, class_names, n_resamples=n_resamples, seed=seed,
                                    threshold=threshold)
    if len(class_names) == 2 and result["auc"] is not None:
        result["youden"] = youden_threshold(y, probabilities[:, 1])
    if result["collapse_warning"]:
        logger.warning("WARNING: %s", result["collapse_warning"])
    return result


def lesion_localisation(roi: Optional[dict[str, str]], cases: Sequence[str], y: Sequence[int],
                        probabilities: np.ndarray, class_names: Sequence[str], n_resamples: int, seed: int,
                        threshold: Optional[float] = None) -> Optional[dict]:
    """The cases classified without a predicted lesion and the metrics without them; None without a ``roi`` column.

    ``roi`` (:func:`~nnunet_mvext.classification.metrics.read_column` of the ``roi`` column): ``lesion`` where the
    case was pooled over its predicted (or given) lesion; ``fallback`` (the ``fallback_roi_label`` region) or
    ``none`` (the whole patch at the volume centre, which the head never trained on) otherwise. Returns
    ``{"count", "cases", "by_roi": {roi: count}, "summary", "metrics_with_predicted_lesion_only"}``, the last
    :func:`metrics_with_intervals` on the cases with ``roi`` = ``lesion`` (None when there is none), and logs the
    summary (a warning when a case had neither lesion nor fallback region).
    """
    if roi is None:
        return None
    flagged = [c for c in cases if roi.get(c) != "lesion"]
    by_roi = {kind: sum(roi.get(c) == kind for c in flagged) for kind in sorted({roi.get(c) or "" for c in flagged})}
    kept = np.array([roi.get(c) == "lesion" for c in cases])
    metrics = None
    if flagged and kept.any():
        metrics = metrics_with_intervals(np.asarray(y)[kept], probabilities[kept], class_names,
                                         n_resamples=n_resamples, seed=seed, threshold=threshold)
    summary = f"{len(flagged)} of {len(cases)} cases had no predicted lesion"
    if flagged:
        summary += (" (" + ", ".join(f"roi '{k}': {v}" for k, v in by_roi.items()) + f"): {_list(flagged)}; "
                    f"they are scored like the others in the metrics above")
        if metrics is not None:
            summary += (f"; without them ({metrics['num_cases']} cases): AUC {_fmt(metrics['auc'])}, accuracy "
                        f"{_fmt(metrics['accuracy'])}, F1 {_fmt(metrics['f1'])}")
    if by_roi.get("none"):
        logger.warning("WARNING: %s.", summary)
    else:
        logger.info("%s.", summary)
    return {"count": len(flagged), "cases": flagged, "by_roi": by_roi, "summary": summary,
            "metrics_with_predicted_lesion_only": metrics}


def write_outputs(result: dict, y: Sequence[int], probabilities: np.ndarray, class_names: Sequence[str],
                  output_folder: str, json_name: str, title: str, sources: Sequence[str]) -> None:
    os.makedirs(output_folder, exist_ok=True)
    with open(os.path.join(output_folder, json_name), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(output_folder, "report.md"), "w") as f:
        f.write(report_markdown(result, title, sources))
    plot_roc(y, probabilities, class_names, os.path.join(output_folder, "roc.png"))
    plot_confusion(result["confusion_matrix"], class_names, os.path.join(output_folder, "confusion_matrix.png"))
    plot_reliability_diagram(y, probabilities, os.path.join(output_folder, "reliability.png"), title=title)


def _embeddings_for(embeddings: Optional[str], predictions_csv: str, cases: Sequence[str]) -> Optional[np.ndarray]:
    if embeddings is None:
        candidate = os.path.join(os.path.dirname(os.path.abspath(predictions_csv)), "classification_embeddings.npz")
        if not os.path.isfile(candidate):
            return None
        embeddings = candidate
    if not os.path.isfile(embeddings):
        raise MVExtError(f"Embeddings file {embeddings} does not exist.")
    saved = np.load(embeddings)
    order = {c: i for i, c in enumerate(saved["case_ids"].tolist())}
    missing = [c for c in cases if c not in order]
    if missing:
        raise MVExtError(f"{embeddings} has no embedding for {len(missing)} case(s): {_list(missing)}.")
    return saved["embeddings"][[order[c] for c in cases]]


def evaluate_classification(reference: str, predictions_csv: str, output_folder: str,
                            embeddings: Optional[str] = None, chill: bool = False,
                            n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, dataset: Optional[str] = None) -> dict:
    """Validate, score ``predictions_csv`` against ``reference`` and write the outputs; returns the result dict.

    Classes are matched by name (:func:`class_order`, :func:`load_reference`): the ``p_<class>`` columns may come
    in any order; integer classes of a CSV reference are read through the class names of ``dataset`` (``-d``) or of
    the ``dataset.json`` beside ``predictions_csv``. ``chill``: score only the predicted cases (as
    ``nnUNetv2_evaluate_folder -chill``) and present in the reference (:func:`cases_in_both`); the cases left out are
    listed in ``result["reference_cases_not_predicted"]`` and ``result["predicted_cases_without_label"]``.
    """
    cases, file_names, file_probs = read_predictions_csv(predictions_csv)
    order, order_source = class_order(reference, [predictions_csv], dataset)
    truth, names = load_reference(reference, order, order_source, file_names)
    probs = align_columns(file_probs, file_names, names, predictions_csv, order_source or "the reference")
    scored, unlabelled, left_out = cases_in_both(truth, cases, reference, predictions_csv, chill)
    probs = probs[[cases.index(c) for c in scored]]
    cases = scored
    emb = _embeddings_for(embeddings, predictions_csv, cases) if len(cases) >= 4 else None
    threshold = aligned_threshold(read_decision_threshold(predictions_csv, file_names), file_names, names,
                                  predictions_csv)
    y = [truth[c] for c in cases]
    result = score(y, probs, names, n_resamples, seed, threshold)
    result["reference"], result["predictions"] = os.path.abspath(reference), os.path.abspath(predictions_csv)
    result["class_names_from"] = order_source or f"{predictions_csv} (the reference names its classes)"
    result["provenance"] = read_provenance(predictions_csv)
    selected = read_column(predictions_csv, "checkpoint_selected_on_these_cases") or {}
    result["checkpoint_selected_on_cases"] = [c for c in cases if selected.get(c) == "1"]
    result["warnings"] = provenance_warnings(result["provenance"], os.path.basename(predictions_csv),
                                             selected_cases=result["checkpoint_selected_on_cases"] if selected
                                             else None, num_cases=len(cases))
    for warning in result["warnings"]:
        logger.warning("WARNING: %s", warning)
    if chill:
        result["reference_cases_not_predicted"] = left_out
        result["predicted_cases_without_label"] = unlabelled
    result["lesion_localisation"] = lesion_localisation(read_column(predictions_csv, "roi"), cases, y, probs, names,
                                                        n_resamples, seed, threshold)
    write_outputs(result, y, probs, names, output_folder, "classification_metrics.json",
                  f"Classification: {os.path.basename(predictions_csv)}", [reference, predictions_csv])
    if emb is not None:
        plot_tsne(emb, y, names, os.path.join(output_folder, "tsne.png"))
    return result
