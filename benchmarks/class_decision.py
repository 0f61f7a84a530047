"""The class decision of a trained multi-phase row: does the argmax of the predicted probabilities lose what the
ranking holds? (issue 32: 'the ranking is better than the decisions')

For a row of ``fusion_classification_results.py`` (its work folder, trained model and held-out predictions), three
decisions on the same held-out probabilities ``p`` (N, K):

- argmax ``p`` (what ``predict-cls`` writes);
- prior correction estimated on the fold-0 validation cases: argmax ``p / q``, with ``q`` (K) the mean predicted
  probability of each class over the validation cases (the trainer's ``fold_0/validation/classification.csv``), as a
  user could do without touching the held-out cases (Saerens et al., Neural Computation 14(1), 2002, the prior-shift
  correction with the validation fold's predicted prior);
- the same with ``q`` estimated on the held-out cases themselves: a diagnostic of how much a decision rule could
  recover, not a result (it reads the held-out predictions it is scored on).

Macro-F1 (scikit-learn, over every class) and Cohen's kappa on the held-out labels; no retraining.
"""

import argparse
import csv
import json
import logging
import os
import sys
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import recorded_command, report

logger = logging.getLogger("class_decision")


def read_probabilities(csv_file: str, class_names: list) -> tuple[list, np.ndarray]:
    """``(case ids, (N, K) probabilities)`` of a ``predict-cls`` style ``classification.csv``, columns by class name."""
    with open(csv_file) as f:
        header, *rows = list(csv.reader(f))
    columns = [header.index(f"p_{name}") for name in class_names]
    return [r[0] for r in rows], np.array([[float(r[i]) for i in columns] for r in rows])


def decisions(probabilities: np.ndarray, truth: np.ndarray, validation_prior: np.ndarray) -> dict:
    """``{decision: (macro-F1, kappa, classes never predicted)}`` for the three decisions of the module docstring."""
    from sklearn.metrics import cohen_kappa_score, f1_score

    k = probabilities.shape[1]
    out = {}
    for name, prior in (("argmax", np.ones(k)), ("prior from the validation fold", validation_prior),
                        ("prior from the held-out cases (diagnostic)", probabilities.mean(0))):
        predicted = (probabilities / np.clip(prior, 1e-3, None)).argmax(1)
        out[name] = (float(f1_score(truth, predicted, average="macro", labels=list(range(k)), zero_division=0)),
                     float(cohen_kappa_score(truth, predicted)), k - len(set(predicted.tolist())))
    return out


def row_paths(workdir: str, row: str) -> tuple[str, str]:
    """The held-out ``classification.csv`` of a row (``ROW`` or ``ROW --roi``) and its model's validation CSV."""
    from fusion_classification_results import rows_for

    base = row.replace(" --roi", "")
    trainer, configuration, _ = rows_for(8)[base]
    folder = f"pred_{base}" + ("_roi" if row.endswith(" --roi") else "")
    results = os.path.join(workdir, "nnUNet_results")
    dataset = next(d for d in sorted(os.listdir(results)) if d.startswith("Dataset"))
    validation = os.path.join(results, dataset, f"{trainer}__nnUNetPlans__{configuration}", "fold_0", "validation",
                              "classification.csv")
    return os.path.join(workdir, folder, "classification.csv"), validation


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a fusion_classification_results.py work folder")
    parser.add_argument("--row", action="append", required=True, help="a measured row, e.g. abaf or 'abaf --roi'")
    parser.add_argument("--append", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw = os.path.join(args.workdir, "nnUNet_raw")
    raw = os.path.join(raw, next(d for d in sorted(os.listdir(raw)) if d.startswith("Dataset")))
    with open(os.path.join(raw, "dataset.json")) as f:
        block = json.load(f)["classification"]
    names = [block["class_names"][str(i)] for i in range(len(block["class_names"]))]
    train_labels = {c: int(v) for c, v in block["labels"].items()}
    with open(os.path.join(raw, "labelsTs", "classification.csv")) as f:
        test_labels = {r[0]: int(r[1]) for r in list(csv.reader(f))[1:]}
    lines = [f"### Class decision of trained rows, {os.path.basename(os.path.normpath(args.workdir))}", "",
             f"`{recorded_command(__file__, argv)}`", "",
             "Held-out probabilities of each row decided three ways (module docstring of "
             "`benchmarks/class_decision.py`); the last is a diagnostic on the held-out cases themselves.", "",
             "| row | validation cases | decision | macro-F1 | Cohen's kappa | classes never predicted |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in args.row:
        held_out, validation = row_paths(args.workdir, row)
        cases, probabilities = read_probabilities(held_out, names)
        val_cases, val_probabilities = read_probabilities(validation, names)
        missing = [c for c in val_cases if c not in train_labels]
        if missing:
            raise SystemExit(f"{validation}: cases without a training label: {missing[:5]}")
        truth = np.array([test_labels[c] for c in cases])
        for name, (f1, kappa, never) in decisions(probabilities, truth, val_probabilities.mean(0)).items():
            lines.append(f"| {row} | {len(val_cases)} | {name} | {f1:.3f} | {kappa:.3f} | {never} |")
    report(lines, args.append)


if __name__ == "__main__":
    main()
