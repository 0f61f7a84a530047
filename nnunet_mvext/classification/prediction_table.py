"""The per-case predictions CSV written by the fold validation and by ``predict-cls``.

Columns, in order: ``case_id``, ``predicted_class``, ``p_<class>`` for every class (the only columns that start with
``p_``: ``evaluate-cls`` reads exactly those), ``beta_<phase>`` (the phase weights of ABAF and decision fusion),
``aux_<phase>_p_<class>`` (each phase's auxiliary classifier: DSN, ABAF, decision; empty for a phase the case misses,
whose classifier saw only the zero embedding that stands for the absent phase, so its output is no prediction),
``roi`` (where the case was
classified: ``lesion``, ``fallback`` or ``none``), ``no_lesion_found`` (1 unless ``roi`` is ``lesion``),
``decision_rule`` (``argmax`` or the binary threshold applied) and, in the fold validation, the provenance columns
(:data:`PROVENANCE_COLUMNS`, the same value in every row) and ``true_class``. ``evaluate-cls`` (also ``--cv``) reads
the provenance and warns about a checkpoint selected on the cases it validates.

Readers link a ``p_<class>`` column to a class by its NAME, never by its position (:func:`align_columns`): a file
whose columns come in another order is scored exactly like the same file in the usual order.
"""

from __future__ import annotations

import csv
from typing import Mapping, Optional, Sequence

import numpy as np

from nnunet_mvext.classification.metrics import predicted_classes, read_column
from nnunet_mvext.errors import MVExtError

#: ``checkpoint``: the weights that made the predictions (``checkpoint_final.pth``, ``checkpoint_best_auc.pth``, ...);
#: ``checkpoint_selected_on_these_cases``: 1 when that checkpoint was chosen on these same validation cases (their
#: metrics are then optimistic), else 0; ``pretrained_checkpoint``: the file that initialised the model (empty: none),
#: ``pretrained_checkpoint_fold``: the fold that file was trained on (empty: none or not recorded).
PROVENANCE_COLUMNS = ("checkpoint", "checkpoint_selected_on_these_cases", "pretrained_checkpoint",
                      "pretrained_checkpoint_fold")


def decision_rule(class_names: Sequence[str], threshold: Optional[float]) -> str:
    """The ``decision_rule`` cell: ``argmax`` or ``p_<class 1> >= t`` (what :func:`predicted_classes` applies)."""
    return "argmax" if threshold is None else f"p_{class_names[1]} >= {threshold:.6f}"


def class_name_difference(names: Sequence[str], source: str, other: Sequence[str], other_source: str) -> str:
    """Empty when both hold the same class names (in any order); else a sentence naming the names only in each."""
    only, only_other = [n for n in names if n not in other], [n for n in other if n not in names]
    if not only and not only_other:
        return ""
    parts = [f"only in {src}: {', '.join(repr(n) for n in ns)}" for src, ns in ((source, only),
                                                                                  (other_source, only_other)) if ns]
    return f"{source} has {list(names)}, {other_source} has {list(other)} ({'; '.join(parts)})"


def align_columns(probabilities: np.ndarray, names: Sequence[str], target_names: Sequence[str], path: str,
                  target_source: str) -> np.ndarray:
    """``probabilities`` (N, K), whose columns are the classes ``names`` of the file ``path``, reordered to the class
    order ``target_names`` (N, K): column k is ``p_<target_names[k]>``. The two must hold the same names; otherwise
    refused, naming the names found only in each."""
    difference = class_name_difference(names, f"{path} (its p_<class> columns)", target_names, target_source)
    if difference:
        raise MVExtError(f"Class names differ: {difference}. The p_<class> columns are matched to the classes by "
                         f"name.")
    return np.asarray(probabilities)[:, [list(names).index(n) for n in target_names]]


def aligned_threshold(threshold: Optional[float], names: Sequence[str], target_names: Sequence[str],
                      path: str) -> Optional[float]:
    """The binary threshold of a file's ``decision_rule`` (a rule on ``p_<names[1]>``) in the class order
    ``target_names``: the same value when ``names[1]`` is the positive class ``target_names[1]``; a rule on the other
    class is refused (it cannot be restated exactly as a rule on the positive class)."""
    if threshold is None or names[1] == target_names[1]:
        return threshold
    raise MVExtError(f"{path}: its decision_rule thresholds p_{names[1]}, but the positive class (class 1 of the "
                     f"reference's class order {list(target_names)}) is '{target_names[1]}'. Write the predictions "
                     f"with the arg-max or with a threshold on p_{target_names[1]}.")


def write_case_predictions(path: str, case_ids: Sequence[str], probabilities: np.ndarray,
                           class_names: Sequence[str], roi_sources: Sequence[str],
                           phase_names: Sequence[str] = (), beta: Optional[np.ndarray] = None,
                           aux_probabilities: Optional[np.ndarray] = None, threshold: Optional[float] = None,
                           y_true: Optional[Sequence[int]] = None, provenance: Optional[dict] = None,
                           absent: Optional[np.ndarray] = None) -> list[str]:
    """Write the CSV; returns the ``predicted_class`` of every case as written (the decision of
    :func:`~nnunet_mvext.classification.metrics.predicted_classes` with ``threshold``, the one rule that metrics and
    console lines use too). ``probabilities`` (N, K), ``beta`` (N, P), ``aux_probabilities`` (N, P, K);
    ``absent`` (N, P phases) bool: the phases each case misses; their ``aux_`` cells are left empty (with views, every
    branch of the phase). ``provenance``: the values of :data:`PROVENANCE_COLUMNS` (None: no such columns), each one
    value written in every row or a ``{case_id: value}`` mapping (``predict-cls``'s
    ``checkpoint_selected_on_these_cases``, 1 only for the input cases a ``checkpoint_best*`` was selected on)."""
    provenance = {k: provenance[k] for k in PROVENANCE_COLUMNS if k in provenance} if provenance else {}
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = [class_names[int(k)] for k in predicted_classes(probabilities, threshold)]
    rule = decision_rule(class_names, threshold)
    blank = None
    if aux_probabilities is not None and absent is not None:
        absent = np.asarray(absent, dtype=bool)
        branches = np.asarray(aux_probabilities).shape[1]
        if branches % absent.shape[1]:
            raise ValueError(f"aux_probabilities has {branches} branches, not a multiple of the {absent.shape[1]} "
                             f"phases of 'absent'")
        blank = np.repeat(absent, branches // absent.shape[1], axis=1)  # branches are phase-major
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
            row = [case, predicted[i]] + [f"{v:.6f}" for v in probabilities[i]]
            if beta is not None:
                row += [f"{v:.6f}" for v in beta[i]]
            if aux_probabilities is not None:
                row += ["" if blank is not None and blank[i, b] else f"{v:.6f}"
                        for b, branch in enumerate(np.asarray(aux_probabilities[i])) for v in branch]
            row += [roi_sources[i], int(roi_sources[i] != "lesion"), rule,
                    *(v[case] if isinstance(v, Mapping) else v for v in provenance.values())]
            writer.writerow(row + ([class_names[int(y_true[i])]] if y_true is not None else []))
    return predicted


def read_provenance(path: str) -> dict[str, str]:
    """The provenance columns present in a predictions CSV: ``{column: value}`` (values that differ between rows are
    joined by ``'; '``); ``{}`` for a file written without them (by ``predict-cls`` or an earlier release)."""
    found = {}
    for name in PROVENANCE_COLUMNS:
        cells = read_column(path, name)
        if cells is not None:
            found[name] = "; ".join(sorted(set(cells.values())))
    return found


def provenance_warnings(provenance: dict[str, str], what: str, fold: Optional[str] = None,
                        selected_cases: Optional[Sequence[str]] = None, num_cases: int = 0) -> list[str]:
    """Warnings about the predictions ``what`` (e.g. ``"fold 0"``) from :func:`read_provenance`; with ``fold`` (the
    cross-validation fold), also a pretrained checkpoint whose stored fold is not recorded or is another one.
    ``selected_cases``: the scored cases whose ``checkpoint_selected_on_these_cases`` is 1, when only some of the
    ``num_cases`` are (``predict-cls -chk checkpoint_best_auc.pth`` on input cases of which some validated a fold):
    the warning names them; an empty sequence (the CSV has the column, no scored case is marked): no warning of
    selection, whatever the file-level provenance says (the marked cases were left out, e.g. by ``--chill``)."""
    warnings = []
    if selected_cases is not None and not selected_cases:
        pass  # the per-case column says: none of the scored cases selected the checkpoint
    elif selected_cases and len(selected_cases) < num_cases:
        shown = ", ".join(list(selected_cases)[:10]) + (" ..." if len(selected_cases) > 10 else "")
        warnings.append(f"{what}: {len(selected_cases)} of these {num_cases} cases ({shown}) were predicted with "
                        f"{provenance.get('checkpoint', 'a checkpoint')}, which was selected on them (a fold's "
                        f"validation cases), so the metrics are optimistic for them (predict them with "
                        f"checkpoint_final.pth, or score the other cases only)")
    elif "1" in provenance.get("checkpoint_selected_on_these_cases", "").split("; "):
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
    """Column names of the phases (``beta_<phase>``, ``aux_<phase>_p_<class>``, log lines).

    A one-channel phase is its channel name exactly, spaces and ``+`` included (``In Phase``, ``C+A``); a comma
    becomes ``_`` so that no CSV reader splits the header. A multi-channel phase joins its channel names with ``+``
    (``arterial+delayed``); when a channel name of any phase holds ``+``, ``(`` or ``)``, every part of a
    multi-channel phase is put in parentheses (``(T2WI)+(C+A)``), so that a group never reads like one channel named
    with a ``+`` (``C`` and ``A`` joined is ``(C)+(A)``, the channel ``C+A`` is ``C+A``). Phases whose names still
    coincide are refused, naming them.
    """
    names_of = [[str(channel_names.get(str(c), c)).replace(",", "_") for c in group] for group in phase_channels]
    wrap = any(ch in part for parts in names_of for part in parts for ch in "+()")
    names = [parts[0] if len(parts) == 1 else "+".join(f"({p})" if wrap else p for p in parts) for parts in names_of]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MVExtError(f"phase_channels {[list(g) for g in phase_channels]}: phases named alike "
                         f"({', '.join(repeated)}); give the channels distinct names in dataset.json.")
    return names
