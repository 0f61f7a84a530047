"""The per-case predictions CSV written by the fold validation and by ``predict-cls``.

Columns, in order: ``case_id``, ``predicted_class``, ``p_<class>`` for every class (the only columns that start with
``p_``: ``evaluate-cls`` reads exactly those), ``beta_<phase>`` (the phase weights of ABAF and decision fusion),
``aux_<phase>_p_<class>`` (each phase's auxiliary classifier: DSN, ABAF, decision), ``roi`` (where the case was
classified: ``lesion``, ``fallback`` or ``none``), ``no_lesion_found`` (1 unless ``roi`` is ``lesion``),
``decision_rule`` (``argmax`` or the binary threshold applied) and, in the fold validation, the provenance columns
(:data:`PROVENANCE_COLUMNS`, the same value in every row) and ``true_class``. ``evaluate-cls`` (also ``--cv``) reads
the provenance and warns about a checkpoint selected on the cases it validates.
"""

from __future__ import annotations

import csv
from typing import Optional, Sequence

import numpy as np

#: ``checkpoint``: the weights that made the predictions (``checkpoint_final.pth``, ``checkpoint_best_auc.pth``, ...);
#: ``checkpoint_selected_on_these_cases``: 1 when that checkpoint was chosen on these same validation cases (their
#: metrics are then optimistic), else 0; ``pretrained_checkpoint``: the file that initialised the model (empty: none),
#: ``pretrained_checkpoint_fold``: the fold that file was trained on (empty: none or not recorded).
PROVENANCE_COLUMNS = ("checkpoint", "checkpoint_selected_on_these_cases", "pretrained_checkpoint",
                      "pretrained_checkpoint_fold")


def predicted_classes(probabilities: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """Arg-max, or for two classes with ``threshold``: class 1 when ``p_1 >= threshold``."""
    p = np.asarray(probabilities, dtype=float)
    if threshold is None:
        return p.argmax(1)
    return (p[:, 1] >= threshold).astype(int)


def write_case_predictions(path: str, case_ids: Sequence[str], probabilities: np.ndarray,
                           class_names: Sequence[str], roi_sources: Sequence[str],
                           phase_names: Sequence[str] = (), beta: Optional[np.ndarray] = None,
                           aux_probabilities: Optional[np.ndarray] = None, threshold: Optional[float] = None,
                           y_true: Optional[Sequence[int]] = None, provenance: Optional[dict] = None) -> None:
    """``probabilities`` (N, K), ``beta`` (N, P), ``aux_probabilities`` (N, P, K); ``provenance``: the values of
    :data:`PROVENANCE_COLUMNS` (written in every row; None: no such columns)."""
    provenance = {k: provenance[k] for k in PROVENANCE_COLUMNS if k in provenance} if provenance else {}
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = predicted_classes(probabilities, threshold)
    rule = "argmax" if threshold is None else f"p_{class_names[1]} >= {threshold:.6f}"
    header = ["case_id", "predicted_class"] + [f"p_{n}" for n in class_names]
    if beta is not None:
        header += [f"beta_{p}" for p in phase_names]
    if aux_probabilities is not None:
        header += [f"aux_{p}_p_{n}" for p in phase_names for n in class_names]
    header += ["roi", "no_lesion_found", "decision_rule", *provenance] + (["true_class"] if y_true is not None else [])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, case in enumerate(case_ids):
            row = [case, class_names[int(predicted[i])]] + [f"{v:.6f}" for v in probabilities[i]]
            if beta is not None:
                row += [f"{v:.6f}" for v in beta[i]]
            if aux_probabilities is not None:
                row += [f"{v:.6f}" for v in np.asarray(aux_probabilities[i]).ravel()]
            row += [roi_sources[i], int(roi_sources[i] != "lesion"), rule, *provenance.values()]
            writer.writerow(row + ([class_names[int(y_true[i])]] if y_true is not None else []))


def read_provenance(path: str) -> dict[str, str]:
    """The provenance columns present in a predictions CSV: ``{column: value}`` (values that differ between rows are
    joined by ``'; '``); ``{}`` for a file written without them (by ``predict-cls`` or an earlier release)."""
    from nnunet_mvext.classification.metrics import read_column

    found = {}
    for name in PROVENANCE_COLUMNS:
        cells = read_column(path, name)
        if cells is not None:
            found[name] = "; ".join(sorted(set(cells.values())))
    return found


def provenance_warnings(provenance: dict[str, str], what: str, fold: Optional[str] = None) -> list[str]:
    """Warnings about the predictions ``what`` (e.g. ``"fold 0"``) from :func:`read_provenance`; with ``fold`` (the
    cross-validation fold), also a pretrained checkpoint whose stored fold is not recorded or is another one."""
    warnings = []
    if "1" in provenance.get("checkpoint_selected_on_these_cases", "").split("; "):
        warnings.append(f"{what}: predicted with {provenance.get('checkpoint', 'a checkpoint')}, which was selected on "
                        f"these same validation cases, so its metrics are optimistic (report checkpoint_final.pth: "
                        f"nnUNetv2_train ... --val without --val_best, or held-out cases)")
    pretrained = provenance.get("pretrained_checkpoint", "")
    if fold is not None and pretrained:
        trained_on = provenance.get("pretrained_checkpoint_fold", "")
        if trained_on != str(fold):
            warnings.append(f"{what}: initialised from the pretrained checkpoint {pretrained}, "
                            + (f"trained on fold {trained_on}" if trained_on else "which names no fold")
                            + ": a segmentation model of another fold (or 'all') trained on this fold's validation "
                              "cases, so its weights may carry them into this fold's predictions")
    return warnings


def phase_names_of(channel_names: dict, phase_channels: Sequence[Sequence[int]]) -> list[str]:
    """Column names of the phases: the dataset's channel names joined by '+' for multi-channel phases."""
    names = []
    for group in phase_channels:
        parts = [str(channel_names.get(str(c), c)).replace(",", "_").replace(" ", "_") for c in group]
        names.append("+".join(parts))
    return names
