"""Phase column names: ordinary names as they always were, spaces and '+' kept, groups never read as one channel."""

import csv

import numpy as np
import pytest

from nnunet_mvext.classification.metrics import read_predictions_csv
from nnunet_mvext.classification.prediction_table import phase_names_of, write_case_predictions
from nnunet_mvext.errors import MVExtError

LLD = {"0": "T2WI", "1": "DWI", "2": "In Phase", "3": "Out Phase", "4": "C-pre", "5": "C+A", "6": "C+V",
       "7": "C+Delay"}


def test_ordinary_names_keep_their_columns():
    names = {"0": "arterial", "1": "portal_venous", "2": "delayed"}
    assert phase_names_of(names, [[0], [1], [2]]) == ["arterial", "portal_venous", "delayed"]
    assert phase_names_of(names, [[0, 2], [1]]) == ["arterial+delayed", "portal_venous"]
    assert phase_names_of({"0": "a,b", "1": "c"}, [[0], [1]]) == ["a_b", "c"]


def test_spaces_and_plus_survive_and_groups_are_unambiguous():
    assert phase_names_of(LLD, [[c] for c in range(8)]) == list(LLD.values())
    assert phase_names_of(LLD, [[0, 5], [2, 3]]) == ["(T2WI)+(C+A)", "(In Phase)+(Out Phase)"]
    # a group of channels named C and A is not the channel named C+A
    assert phase_names_of({"0": "C", "1": "A", "2": "C+A"}, [[0, 1], [2]]) == ["(C)+(A)", "C+A"]


def test_names_that_still_coincide_are_refused():
    with pytest.raises(MVExtError, match=r"phases named alike \(x\)"):
        phase_names_of({"0": "x", "1": "x"}, [[0], [1]])


def test_the_csv_header_carries_the_names_and_evaluation_reads_it(tmp_path):
    path = str(tmp_path / "classification.csv")
    phases = phase_names_of(LLD, [[2], [5], [0, 7]])
    write_case_predictions(path, ["MR1_0"], np.array([[0.2, 0.8]]), ["a", "b"], ["lesion"], phases,
                           beta=np.array([[0.3, 0.3, 0.4]]), aux_probabilities=np.full((1, 3, 2), 0.5))
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert ["beta_In Phase", "beta_C+A", "beta_(T2WI)+(C+Delay)"] == [h for h in header if h.startswith("beta_")]
    assert "aux_C+A_p_b" in header and "aux_(T2WI)+(C+Delay)_p_a" in header
    cases, classes, probabilities = read_predictions_csv(path)
    assert cases == ["MR1_0"] and classes == ["a", "b"] and probabilities.tolist() == [[0.2, 0.8]]


@pytest.mark.parametrize("views", [1, 2])
def test_auxiliary_probabilities_of_an_absent_phase_are_written_empty(tmp_path, views):
    """Case b misses phase t2: its auxiliary classifier (every view's, phase-major) saw only the zero embedding."""
    path = str(tmp_path / "c.csv")
    branches = [f"{p}_{v}" for p in ("t1", "t2") for v in range(views)] if views > 1 else ["t1", "t2"]
    aux = np.full((2, len(branches), 2), 0.5)
    write_case_predictions(path, ["a", "b"], np.array([[0.3, 0.7], [0.6, 0.4]]), ["neg", "pos"], ["lesion"] * 2,
                           branches, None, aux, absent=np.array([[False, False], [False, True]]))
    with open(path) as f:
        rows = list(csv.DictReader(f))
    cells = {r["case_id"]: [r[f"aux_{b}_p_{n}"] for b in branches for n in ("neg", "pos")] for r in rows}
    assert cells["a"] == ["0.500000"] * 2 * len(branches)
    assert cells["b"] == ["0.500000"] * 2 * views + [""] * 2 * views
    assert read_predictions_csv(path)[0] == ["a", "b"]  # still a predictions file evaluate-cls reads
