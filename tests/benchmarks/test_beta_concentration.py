"""The benchmark tables' measure of ABAF's phase-weight collapse (issue 32: 'the median of the largest beta of a case
is 0.96, and 63 % of the cases put more than 0.9 on one phase')."""

import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


@pytest.fixture
def results_file(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import results_file

    return results_file


def test_uniform_weights_do_not_collapse(results_file):
    c = results_file.beta_concentration([[0.25] * 4] * 3)
    assert c == {"median_largest": 0.25, "share_above_0.9": 0.0}


def test_median_and_share_over_cases(results_file):
    betas = [[0.96, 0.02, 0.02], [0.5, 0.3, 0.2], [0.05, 0.93, 0.02], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]]
    c = results_file.beta_concentration(betas)
    assert c["median_largest"] == pytest.approx(0.8)  # largest per case: 0.96, 0.5, 0.93, 0.4, 0.8
    assert c["share_above_0.9"] == pytest.approx(0.4)


def test_no_weights_no_measure(results_file):
    assert results_file.beta_concentration([]) == {}


def test_the_script_reads_the_beta_columns_by_name(results_file, tmp_path):
    import beta_collapse

    csv_file = tmp_path / "classification.csv"
    csv_file.write_text("case_id,predicted_class,p_a,beta_T2,beta_DWI\nc1,a,1.0,0.95,0.05\nc2,a,1.0,0.3,0.7\n")
    phases, weights = beta_collapse.phase_weights(str(csv_file))
    assert phases == ["T2", "DWI"] and weights == [[0.95, 0.05], [0.3, 0.7]]
