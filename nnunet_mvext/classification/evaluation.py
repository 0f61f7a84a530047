"""``nnunet-mvext evaluate-cls``: a predictions CSV against reference labels.

Reference: a ``case_id,class`` CSV or a ``dataset.json`` with the ``classification`` block. Writes
``classification_metrics.json``, ``roc.png``, ``confusion_matrix.png`` and, given embeddings, ``tsne.png``.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from nnunet_mvext.classification.case_labels import class_block, parse_class_indices, read_labels_csv
from nnunet_mvext.classification.metrics import (classification_metrics, plot_confusion, plot_roc, plot_tsne,
                                                 read_predictions_csv)
from nnunet_mvext.errors import MVExtError


def load_reference(path: str) -> tuple[dict, Optional[list]]:
    """``({case_id: class}, class_names or None)`` from a labels CSV or a dataset.json with the block."""
    if path.endswith(".json"):
        with open(path) as f:
            block = class_block(json.load(f), path)
        names = [block["class_names"][str(i)] for i in range(len(block["class_names"]))]
        return {k: int(v) for k, v in block["labels"].items()}, names
    return parse_class_indices(read_labels_csv(path), None, path), None


def evaluate_classification(reference: str, predictions_csv: str, output_folder: str,
                            embeddings: Optional[str] = None) -> dict:
    """Metrics JSON and plots for ``predictions_csv`` against ``reference``; case sets must match."""
    truth, ref_names = load_reference(reference)
    cases, names, probs = read_predictions_csv(predictions_csv)
    if ref_names is not None and ref_names != names:
        raise MVExtError(f"Class names differ: {reference} has {ref_names}, {predictions_csv} has {names}.")
    missing_pred = sorted(set(truth) - set(cases))
    missing_ref = sorted(set(cases) - set(truth))
    if missing_pred or missing_ref:
        raise MVExtError("Case sets differ. " + (f"No prediction for: {', '.join(missing_pred)}. " if missing_pred
                                                  else "") +
                         (f"No reference label for: {', '.join(missing_ref)}." if missing_ref else ""))
    if max(truth.values()) >= len(names):
        raise MVExtError(f"{reference} uses class {max(truth.values())} but {predictions_csv} has only "
                         f"{len(names)} classes.")
    y = [truth[c] for c in cases]
    os.makedirs(output_folder, exist_ok=True)
    result = classification_metrics(y, probs, names)
    with open(os.path.join(output_folder, "classification_metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot_roc(y, probs, names, os.path.join(output_folder, "roc.png"))
    plot_confusion(result["confusion_matrix"], names, os.path.join(output_folder, "confusion_matrix.png"))
    if embeddings is None:
        candidate = os.path.join(os.path.dirname(os.path.abspath(predictions_csv)), "classification_embeddings.npz")
        embeddings = candidate if os.path.isfile(candidate) else None
    if embeddings is not None and len(cases) >= 4:
        saved = np.load(embeddings)
        order = {c: i for i, c in enumerate(saved["case_ids"].tolist())}
        plot_tsne(saved["embeddings"][[order[c] for c in cases]], y, names, os.path.join(output_folder, "tsne.png"))
    return result
