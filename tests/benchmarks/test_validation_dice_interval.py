"""validation_dice_interval: the lesion Dice and its interval come from nnU-Net's per-case values of the named label,
cases without that label (Dice NaN) left out and counted."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
from validation_dice_interval import dice_interval


def _summary(tmp_path, lesion_dice, organ_dice=0.99):
    cases = [{"metrics": {"1": {"Dice": organ_dice}, "2": {"Dice": d}}} for d in lesion_dice]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"metric_per_case": cases, "mean": {}}))
    return str(path)


def test_the_mean_and_interval_are_of_the_named_label_without_the_cases_lacking_it(tmp_path):
    values = [0.6, 0.7, 0.8, 0.9, 0.75, 0.65, float("nan")]
    mean, low, high, n, left_out = dice_interval(_summary(tmp_path, values), "2")
    assert (n, left_out) == (6, 1)
    assert mean == pytest.approx(0.7333333)
    assert 0.6 < low < mean < high < 0.9  # a percentile interval of the mean lies within the values


def test_identical_values_give_a_zero_width_interval_at_the_value(tmp_path):
    mean, low, high, _, _ = dice_interval(_summary(tmp_path, [0.8] * 5), "2")
    assert mean == low == high == pytest.approx(0.8)
