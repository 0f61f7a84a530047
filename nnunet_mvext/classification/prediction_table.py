"""The per-case predictions CSV written by the fold validation and by ``predict-cls``.

Columns, in order: ``case_id``, ``predicted_class``, ``p_<class>`` for every class (the only columns that start with
``p_``: ``evaluate-cls`` reads exactly those), ``beta_<phase>`` (the phase weights of ABAF and decision fusion),
``aux_<phase>_p_<class>`` (each phase's auxiliary classifier: DSN, ABAF, decision), ``roi`` (where the case was
classified: ``lesion``, ``fallback`` or ``none``), ``no_lesion_found`` (1 unless ``roi`` is ``lesion``),
``decision_rule`` (``argmax`` or the binary threshold applied) and, in the fold validation, ``true_class``.
"""

from __future__ import annotations

import csv
from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.errors import MVExtError


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
                           y_true: Optional[Sequence[int]] = None) -> None:
    """``probabilities`` (N, K), ``beta`` (N, P), ``aux_probabilities`` (N, P, K)."""
    probabilities = np.asarray(probabilities, dtype=float)
    predicted = predicted_classes(probabilities, threshold)
    rule = "argmax" if threshold is None else f"p_{class_names[1]} >= {threshold:.6f}"
    header = ["case_id", "predicted_class"] + [f"p_{n}" for n in class_names]
    if beta is not None:
        header += [f"beta_{p}" for p in phase_names]
    if aux_probabilities is not None:
        header += [f"aux_{p}_p_{n}" for p in phase_names for n in class_names]
    header += ["roi", "no_lesion_found", "decision_rule"] + (["true_class"] if y_true is not None else [])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, case in enumerate(case_ids):
            row = [case, class_names[int(predicted[i])]] + [f"{v:.6f}" for v in probabilities[i]]
            if beta is not None:
                row += [f"{v:.6f}" for v in beta[i]]
            if aux_probabilities is not None:
                row += [f"{v:.6f}" for v in np.asarray(aux_probabilities[i]).ravel()]
            row += [roi_sources[i], int(roi_sources[i] != "lesion"), rule]
            writer.writerow(row + ([class_names[int(y_true[i])]] if y_true is not None else []))


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
