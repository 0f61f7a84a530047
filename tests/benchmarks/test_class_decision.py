"""benchmarks/class_decision.py: the prior correction from the validation fold, and probabilities read by class name."""

import os

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


@pytest.fixture
def class_decision(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import class_decision

    return class_decision


def test_the_validation_prior_moves_a_decision_biased_towards_one_class(class_decision):
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.3, 0.7]])
    truth = np.array([0, 1, 1, 1])
    out = class_decision.decisions(probabilities, truth, validation_prior=np.array([0.75, 0.25]))
    assert out["argmax"][0] == pytest.approx(0.5) and out["argmax"][2] == 0  # [0, 0, 0, 1]
    assert out["prior from the validation fold"] == (1.0, 1.0, 0)  # p / q -> [0, 1, 1, 1]
    # the diagnostic's prior is the held-out mean (0.6, 0.4): p / q -> [0, 0, 0, 1] again
    assert out["prior from the held-out cases (diagnostic)"][0] == pytest.approx(0.5)


def test_probabilities_are_read_by_class_name_not_column_position(class_decision, tmp_path):
    csv_file = tmp_path / "classification.csv"
    csv_file.write_text("case_id,predicted_class,p_b,p_a\nc1,b,0.8,0.2\nc2,a,0.3,0.7\n")
    cases, probabilities = class_decision.read_probabilities(str(csv_file), ["a", "b"])
    assert cases == ["c1", "c2"]
    assert np.allclose(probabilities, [[0.2, 0.8], [0.7, 0.3]])
